//! A program the drivers run (helm): a bare name found through `PATH` the way a shell finds
//! it, or a path. The distinction matters because process spawners treat a `Path` argument as a
//! file relative to the working directory (duct runs `PathBuf::from("helm")` as `./helm`), while
//! a bare name must be searched on `PATH`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A bare name (`helm`), looked up on `PATH` when spawned.
    OnPath(OsString),
    /// A file: absolute, or relative to the working directory.
    At(PathBuf),
}

impl Program {
    /// A program from a setting such as `$OPUS_HELM`: a value without a path separator is a name
    /// on `PATH`, anything else a path.
    pub fn from_setting(value: &OsStr) -> Program {
        if !value.as_encoded_bytes().contains(&b'/') {
            Program::OnPath(value.to_owned())
        } else {
            Program::At(PathBuf::from(value))
        }
    }

    /// What to hand to the spawner: the bare name (so `execvp` searches `PATH`), or the path.
    /// A relative path keeps a separator, so no spawner mistakes it for a name.
    pub fn executable(&self) -> OsString {
        match self {
            Program::OnPath(name) => name.clone(),
            Program::At(path) if path.is_relative() && path.components().count() == 1 => {
                Path::new(".").join(path).into_os_string()
            }
            Program::At(path) => path.clone().into_os_string(),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Program::OnPath(name) => write!(f, "`{}` on PATH", name.to_string_lossy()),
            Program::At(path) => write!(f, "{}", path.display()),
        }
    }
}

impl From<&str> for Program {
    fn from(value: &str) -> Program {
        Program::from_setting(OsStr::new(value))
    }
}

impl From<PathBuf> for Program {
    fn from(path: PathBuf) -> Program {
        Program::At(path)
    }
}

impl From<&Path> for Program {
    fn from(path: &Path) -> Program {
        Program::At(path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_searched_on_path_and_a_path_is_kept() {
        assert_eq!(Program::from("helm"), Program::OnPath("helm".into()));
        assert_eq!(Program::from("helm").executable(), OsString::from("helm"));
        assert_eq!(Program::from("/opt/bin/helm"), Program::At("/opt/bin/helm".into()));
        assert_eq!(Program::from("bin/helm").executable(), OsString::from("bin/helm"));
        assert_eq!(Program::from("./helm"), Program::At("./helm".into()));
        // A path given as a path stays a file in the working directory, never a PATH lookup.
        assert_eq!(Program::from(PathBuf::from("helm")).executable(), OsString::from("./helm"));
    }

    #[test]
    fn programs_name_themselves_in_messages() {
        assert_eq!(format!("{}", Program::from("helm")), "`helm` on PATH");
        assert_eq!(format!("{}", Program::from("/opt/bin/helm")), "/opt/bin/helm");
    }
}
