//! Rendering with minijinja in strict mode: an undefined variable is an error that names the
//! template and the line, never an empty string. Used for values templates (owned by the
//! catalog) and for the template expressions clients write in `values_custom`.
//!
//! Every render is bounded: a template may execute at most [`TEMPLATE_FUEL`] instructions and
//! write at most [`MAX_TEMPLATE_OUTPUT_BYTES`], so no loop can hang or exhaust the gate.
//!
//! Secrets are in the context as opaque handles (see [`crate::values`]): the only thing a
//! template may do with one is place it whole (`{{ secrets.db.password }}`). Passing it through
//! a filter, concatenating it, or printing a map of secrets (`{{ secrets }}`) is an error at
//! that expression, so the internal placeholder a secret stands for can never be mangled into
//! a deployed value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Object, ObjectRepr};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use crate::values::is_placeholder;

/// How many instructions one render may execute. The shipped catalog templates need a few
/// thousand; a loop that runs longer than this is refused.
pub const TEMPLATE_FUEL: u64 = 100_000;

/// How much text one render may produce. The largest shipped values file is a few kilobytes.
pub const MAX_TEMPLATE_OUTPUT_BYTES: usize = 1 << 20;

/// What a secret handle turns into when a filter or `~` makes text of it: never the
/// placeholder. Rendering refuses any output that carries it.
const MISUSED_SECRET: &str = "\u{1}opus-secret-used-as-text\u{1}";
const MISUSED_SECRET_WORD: &str = "opus-secret-used-as-text";

/// A rendering failure, with where it happened in the template's text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// The template's name (its path for values templates).
    pub name: String,
    /// One-based line in the template, when known.
    pub line: Option<usize>,
    /// Byte range in the template's text, when known.
    pub range: Option<std::ops::Range<usize>>,
    pub message: String,
    /// Which rule the template broke: strictness, a limit, or the use of a secret.
    pub kind: TemplateErrorKind,
}

/// The cause of a [`TemplateError`], for the help text a diagnostic gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// Syntax, an undefined variable, a wrong type: minijinja's own errors.
    Template,
    /// More than [`TEMPLATE_FUEL`] instructions.
    OutOfFuel,
    /// More than [`MAX_TEMPLATE_OUTPUT_BYTES`] of output.
    OutputTooLarge,
    /// A secret used other than by placing it whole.
    SecretMisused,
}

impl TemplateErrorKind {
    /// What to do about it, for a diagnostic's help.
    pub fn help(self) -> &'static str {
        match self {
            TemplateErrorKind::Template => {
                "templates are rendered in strict mode: every variable must be defined"
            }
            TemplateErrorKind::OutOfFuel => {
                "a template may execute at most 100000 instructions; make the loop shorter"
            }
            TemplateErrorKind::OutputTooLarge => "a template may produce at most 1 MiB of text",
            TemplateErrorKind::SecretMisused => {
                "a secret can only be placed whole, as in `{{ secrets.db.password }}`; filters, tests, `~` and printing maps of secrets are refused"
            }
        }
    }
}

/// A secret in a template's context: it renders as its placeholder when placed whole, and as
/// [`MISUSED_SECRET`] whenever anything else makes text of it.
#[derive(Clone)]
struct SecretHandle {
    placeholder: String,
}

impl std::fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MISUSED_SECRET)
    }
}

impl Object for SecretHandle {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MISUSED_SECRET)
    }
}

/// The JSON context as template values, each secret placeholder as a [`SecretHandle`].
fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) if is_placeholder(text) => {
            Value::from_object(SecretHandle { placeholder: text.clone() })
        }
        serde_json::Value::String(text) => Value::from(text.as_str()),
        serde_json::Value::Array(items) => Value::from(items.iter().map(to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), to_value(v))))
        }
    }
}

/// Whether text made by anything but placing a secret carries a secret: a handle made text
/// (by a filter, `~`, printing a map) or a placeholder captured and transformed (a `filter`
/// block).
fn carries_misused_secret(text: &str) -> bool {
    if text.contains('\u{1}') {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    lower.contains(MISUSED_SECRET_WORD) || lower.contains(crate::values::PLACEHOLDER_WORD)
}

/// An output buffer that keeps at most [`MAX_TEMPLATE_OUTPUT_BYTES`] and counts the rest.
struct CappedOutput<'a> {
    kept: Vec<u8>,
    written: &'a AtomicUsize,
}

impl std::io::Write for CappedOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.fetch_add(buf.len(), Ordering::Relaxed);
        let room = (MAX_TEMPLATE_OUTPUT_BYTES + 1).saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn environment(written: Arc<AtomicUsize>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_formatter(move |out, state, value| {
        if written.load(Ordering::Relaxed) > MAX_TEMPLATE_OUTPUT_BYTES {
            return Err(Error::new(ErrorKind::InvalidOperation, OUTPUT_TOO_LARGE));
        }
        if let Some(secret) = value.downcast_object_ref::<SecretHandle>() {
            return minijinja::escape_formatter(out, state, &Value::from(secret.placeholder.as_str()));
        }
        let misused = match value.as_str() {
            Some(text) => carries_misused_secret(text),
            None => carries_misused_secret(&value.to_string()),
        };
        if misused {
            return Err(Error::new(ErrorKind::InvalidOperation, SECRET_MISUSED));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

const OUTPUT_TOO_LARGE: &str = "the rendered text exceeds the limit of 1 MiB";
const SECRET_MISUSED: &str = "a secret is used other than by placing it whole";

/// A minijinja error as a [`TemplateError`] of the template `name`.
fn template_error(name: &str, e: &minijinja::Error) -> TemplateError {
    let detail = e.detail().unwrap_or_default();
    let (kind, message) = match e.kind() {
        ErrorKind::OutOfFuel => (
            TemplateErrorKind::OutOfFuel,
            format!("the template ran out of fuel: it executed more than {TEMPLATE_FUEL} instructions"),
        ),
        ErrorKind::InvalidOperation if detail == OUTPUT_TOO_LARGE => {
            (TemplateErrorKind::OutputTooLarge, detail.to_owned())
        }
        ErrorKind::InvalidOperation if detail == SECRET_MISUSED => {
            (TemplateErrorKind::SecretMisused, detail.to_owned())
        }
        kind if detail.is_empty() => (TemplateErrorKind::Template, kind.to_string()),
        kind => (TemplateErrorKind::Template, format!("{kind}: {detail}")),
    };
    TemplateError { name: name.to_owned(), line: e.line(), range: e.range(), message, kind }
}

/// Renders one parsed template into capped output and checks the whole text afterwards.
fn render_template(
    name: &str,
    template: &minijinja::Template<'_, '_>,
    context: &Value,
    written: &AtomicUsize,
) -> Result<String, TemplateError> {
    written.store(0, Ordering::Relaxed);
    let mut out = CappedOutput { kept: Vec::new(), written };
    template.render_captured_to(context, &mut out).map_err(|e| template_error(name, &e))?;
    let whole = |kind: TemplateErrorKind, message: &str| TemplateError {
        name: name.to_owned(),
        line: None,
        range: None,
        message: message.to_owned(),
        kind,
    };
    // Text written after the last expression (a loop of plain text) is caught here, without a
    // more precise place than the template.
    if written.load(Ordering::Relaxed) > MAX_TEMPLATE_OUTPUT_BYTES {
        return Err(whole(TemplateErrorKind::OutputTooLarge, OUTPUT_TOO_LARGE));
    }
    let text = String::from_utf8(out.kept).expect("minijinja writes UTF-8");
    if text.to_ascii_lowercase().contains(MISUSED_SECRET_WORD) {
        return Err(whole(TemplateErrorKind::SecretMisused, SECRET_MISUSED));
    }
    Ok(text)
}

/// Renders many templates with one minijinja environment: a values template is parsed once
/// per compile, not once per component that uses it. Each render still has its own fuel and
/// its own output limit.
pub struct Renderer {
    env: Environment<'static>,
    written: Arc<AtomicUsize>,
    /// The source each kept name was added with, and the error parsing it gave.
    parsed: HashMap<String, (String, Option<TemplateError>)>,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        let written = Arc::new(AtomicUsize::new(0));
        Renderer { env: environment(written.clone()), written, parsed: HashMap::new() }
    }

    /// Renders the template `source` named `name` (a values template's path), parsing it only
    /// the first time the name is seen with this source.
    pub fn render(&mut self, name: &str, source: &str, context: &Value) -> Result<String, TemplateError> {
        let known = self.parsed.get(name).is_some_and(|(text, _)| text == source);
        if !known {
            let error = self
                .env
                .add_template_owned(name.to_owned(), source.to_owned())
                .err()
                .map(|e| template_error(name, &e));
            self.parsed.insert(name.to_owned(), (source.to_owned(), error));
        }
        if let Some((_, Some(error))) = self.parsed.get(name) {
            return Err(error.clone());
        }
        let template = self.env.get_template(name).map_err(|e| template_error(name, &e))?;
        render_template(name, &template, context, &self.written)
    }

    /// Renders a template used once (a string of `values_custom`), without keeping it.
    pub fn render_once(
        &mut self,
        name: &str,
        source: &str,
        context: &Value,
    ) -> Result<String, TemplateError> {
        self.parsed.remove(name);
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| template_error(name, &e))?;
        let rendered = match self.env.get_template(name) {
            Ok(template) => render_template(name, &template, context, &self.written),
            Err(e) => Err(template_error(name, &e)),
        };
        self.env.remove_template(name);
        rendered
    }
}

/// A JSON context as template values, each secret placeholder a handle only placeable whole.
pub fn context_value(context: &serde_json::Value) -> Value {
    to_value(context)
}

/// Renders `source` (named `name` in errors) with `context`.
pub fn render(name: &str, source: &str, context: &serde_json::Value) -> Result<String, TemplateError> {
    Renderer::new().render_once(name, source, &to_value(context))
}

/// Whether a string contains template syntax and so needs rendering.
pub fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::SecretString;
    use crate::values::{DigestKey, SecretEntry, SecretTable};

    #[test]
    fn renders_with_the_context() {
        let out = render("t", "a: {{ x.y }}", &serde_json::json!({"x": {"y": 1}})).unwrap();
        assert_eq!(out, "a: 1");
    }

    #[test]
    fn undefined_variables_are_errors_with_the_line() {
        let error =
            render("values.yaml.j2", "a: 1\nb: {{ inputs.nope }}\n", &serde_json::json!({"inputs": {}}))
                .expect_err("strict mode");
        assert_eq!(error.name, "values.yaml.j2");
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("undefined"), "{}", error.message);
        assert_eq!(error.kind, TemplateErrorKind::Template);
    }

    #[test]
    fn an_endless_loop_runs_out_of_fuel_at_its_line() {
        let source =
            "a: 1\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\n";
        let error = render("t", source, &serde_json::json!({})).expect_err("out of fuel");
        assert_eq!(error.kind, TemplateErrorKind::OutOfFuel);
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("more than 100000 instructions"), "{}", error.message);
    }

    #[test]
    fn output_over_one_mebibyte_is_refused() {
        let ctx = serde_json::json!({"big": "x".repeat(600_000)});
        let error = render("t", "a: {{ big }}\nb: {{ big }}\nc: {{ big }}\n", &ctx).expect_err("too large");
        assert_eq!(error.kind, TemplateErrorKind::OutputTooLarge);
        assert_eq!(error.line, Some(3));
        let raw = format!("{{% for i in range(300) %}}{}{{% endfor %}}", "y".repeat(4000));
        let error = render("t", &raw, &ctx).expect_err("too large");
        assert_eq!(error.kind, TemplateErrorKind::OutputTooLarge);
        assert!(render("t", "{{ big }}", &ctx).is_ok());
    }

    fn secrets_context() -> (serde_json::Value, String) {
        let mut table = SecretTable::default();
        let key = DigestKey::Keyed(SecretString::new("k"));
        let secret = SecretString::new("canary-5");
        let placeholder = table.placeholder(SecretEntry {
            digest: key.digest_at("s.enc.yaml", "p", &secret),
            value: Some(secret),
        });
        (serde_json::json!({"secrets": {"db": {"password": placeholder.clone()}}, "name": "n"}), placeholder)
    }

    #[test]
    fn a_secret_placed_whole_renders_as_its_placeholder() {
        let (ctx, placeholder) = secrets_context();
        let yaml = render("values.yaml.j2", "password: {{ secrets.db.password }}\n", &ctx).unwrap();
        let plain = render("t", "url: x://u:{{ secrets.db.password }}@h", &ctx).unwrap();
        assert_eq!(plain, format!("url: x://u:{placeholder}@h"));
        let as_json = serde_json::to_string(&placeholder).unwrap();
        assert_eq!(yaml, format!("password: {as_json}\n"));
        let set = render("t", "{% set p = secrets.db.password %}{{ p }}", &ctx).unwrap();
        assert_eq!(set, placeholder);
    }

    #[test]
    fn any_other_use_of_a_secret_is_refused_at_the_expression() {
        let (ctx, _) = secrets_context();
        for source in [
            "a: 1\nb: {{ secrets }}",
            "a: 1\nb: {{ secrets.db }}",
            "a: 1\nb: {{ secrets.db.password | upper }}",
            "a: 1\nb: {{ secrets.db.password | string }}",
            "a: 1\nb: {{ 'x' ~ secrets.db.password }}",
            "a: 1\nb: {{ secrets.db.password ~ name }}",
            "a: 1\nb: {{ [secrets.db.password] }}",
            "a: 1\nb: {{ secrets | tojson }}",
            "a: 1\nb: {{ secrets.db.password | replace('o', '0') | lower }}",
            "a: 1\nb: {{ secrets.db.password | safe }}",
            "a: 1\nb: {{ secrets.db.password | tojson }}",
        ] {
            let error = render("t", source, &ctx).expect_err(source);
            assert_eq!(error.kind, TemplateErrorKind::SecretMisused, "{source}: {}", error.message);
            assert_eq!(error.line, Some(2), "{source}");
            let range = error.range.clone().expect("a range");
            assert!(range.start > source.find("{{").unwrap() && range.end <= source.len(), "{source}");
        }
        for source in [
            "{{ secrets.db.password | length }}",
            "{{ secrets.db.password | first }}",
            "{% for c in secrets.db.password %}{% endfor %}",
        ] {
            assert!(render("t", source, &ctx).is_err(), "{source}");
        }
        let error = render("t", "{% filter upper %}{{ secrets.db.password }}{% endfilter %}", &ctx)
            .expect_err("filter block");
        assert_eq!(error.kind, TemplateErrorKind::SecretMisused);
    }
}
