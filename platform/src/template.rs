//! Rendering with minijinja in strict mode: an undefined variable is an error that names the
//! template and the line, never an empty string. Used for values templates (owned by the
//! catalog) and for the template expressions clients write in `values_custom`.

use minijinja::{Environment, UndefinedBehavior};

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
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// Renders `source` (named `name` in errors) with `context`.
pub fn render(name: &str, source: &str, context: &serde_json::Value) -> Result<String, TemplateError> {
    let mut env = environment();
    let to_error = |e: minijinja::Error| TemplateError {
        name: name.to_owned(),
        line: e.line(),
        range: e.range(),
        message: match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    env.add_template_owned(name.to_owned(), source.to_owned()).map_err(to_error)?;
    let template = env.get_template(name).map_err(to_error)?;
    template.render(context).map_err(to_error)
}

/// Whether a string contains template syntax and so needs rendering.
pub fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
