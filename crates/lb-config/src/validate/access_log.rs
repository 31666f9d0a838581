//! `access_log = { enabled, path }` of a listener: on by default, to
//! standard output unless a file is named.

use std::path::PathBuf;

use super::Errors;
use crate::defaults as d;
use crate::model::AccessLogTarget;
use crate::schema::RawAccessLog;

pub(super) fn access_log(
    raw: Option<&RawAccessLog>,
    path: &str,
    errors: &mut Errors,
) -> Option<AccessLogTarget> {
    let raw = raw.unwrap_or(&RawAccessLog {
        enabled: None,
        path: None,
    });
    let file = raw.path.as_deref().and_then(|file| {
        let key = format!("{path}.access_log.path");
        if file.is_empty() || file.ends_with('/') || file.contains('\0') {
            errors.push(key, format!("{file:?} is not a file path"));
            return None;
        }
        Some(PathBuf::from(file))
    });
    if !raw.enabled.unwrap_or(d::ACCESS_LOG_ENABLED) {
        return None;
    }
    Some(file.map_or(AccessLogTarget::Stdout, AccessLogTarget::File))
}

#[cfg(test)]
mod tests {
    use crate::{AccessLogTarget, LoadError};

    fn listener(access_log: &str) -> String {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:8081\"\nprotocol = \"h1\"\n{access_log}\n\
             [[listeners.backends]]\naddress = \"127.0.0.1:9001\"\n\
             [[listeners]]\naddress = \"127.0.0.1:8082\"\nprotocol = \"tcp\"\n\
             [[listeners.backends]]\naddress = \"127.0.0.1:9002\"\n"
        )
    }

    fn targets(access_log: &str) -> Vec<Option<AccessLogTarget>> {
        crate::parse(&listener(access_log))
            .unwrap()
            .listeners
            .into_iter()
            .map(|l| l.access_log)
            .collect()
    }

    #[test]
    fn on_by_default_to_stdout_for_every_listener_kind() {
        assert_eq!(
            targets(""),
            vec![Some(AccessLogTarget::Stdout), Some(AccessLogTarget::Stdout)]
        );
    }

    #[test]
    fn a_path_names_the_file_and_enabled_false_turns_it_off() {
        assert_eq!(
            targets("access_log = { path = \"logs/a.log\" }")[0],
            Some(AccessLogTarget::File("logs/a.log".into()))
        );
        assert_eq!(
            targets("access_log = { enabled = false, path = \"a.log\" }")[0],
            None
        );
        assert_eq!(targets("access_log = { enabled = false }")[0], None);
    }

    #[test]
    fn bad_paths_and_unknown_keys_are_reported_with_their_key() {
        for bad in ["\"\"", "\"logs/\""] {
            let text = listener(&format!("access_log = {{ path = {bad} }}"));
            let Err(LoadError::Invalid(errors)) = crate::parse(&text) else {
                panic!("{bad} accepted");
            };
            assert_eq!(errors[0].path, "listeners[0].access_log.path", "{bad}");
        }
        let text = listener("access_log = { file = \"a.log\" }");
        let Err(LoadError::Parse(e)) = crate::parse(&text) else {
            panic!("unknown key accepted");
        };
        assert_eq!(e.path, "listeners[0].access_log.file");
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_directory() {
        let dir = std::env::temp_dir().join(format!("eg-cfg-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.toml");
        std::fs::write(&file, listener("access_log = { path = \"a.log\" }")).unwrap();
        let config = crate::load(file.to_str().unwrap()).unwrap();
        assert_eq!(
            config.listeners[0].access_log,
            Some(AccessLogTarget::File(dir.join("a.log")))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
