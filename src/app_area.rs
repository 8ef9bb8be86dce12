//! The app area: the device paths a release may write.
//!
//! A device refuses (`protected`) every path of a release outside its app
//! area (config `appPaths`, [`DEFAULT_APP_PATHS`] by default), and with the
//! runtime flag it also takes `boot.py` and `lib/uota/`. The host uses the
//! same rule to leave project files outside the area (a README, tests, build
//! scripts) out of a release instead of sending them to be refused. The
//! device's copy of this rule is `device/lib/uota/paths.py`.

/// The app area when the config does not set `appPaths`. An entry ending in
/// `/` is a folder and everything under it, `*.ext` a top-level file with
/// that extension, anything else one exact path; matching ignores case.
pub const DEFAULT_APP_PATHS: [&str; 8] = [
    "main.py",
    "*.py",
    "*.mpy",
    "app/",
    "lib/",
    "www/",
    "static/",
    "config/ota.json",
];

/// What a release with the runtime flag may write besides the app area.
pub const RUNTIME_PATHS: [&str; 2] = ["boot.py", "lib/uota/"];

/// A parsed app area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppArea {
    entries: Vec<String>,
}

impl Default for AppArea {
    fn default() -> Self {
        AppArea::new(None)
    }
}

impl AppArea {
    /// The area `appPaths` names, or the default when it is absent or empty.
    pub fn new(app_paths: Option<&[String]>) -> Self {
        let entries = match app_paths {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|e| e.trim_start_matches('/').to_lowercase())
                .collect(),
            _ => DEFAULT_APP_PATHS.iter().map(|e| e.to_string()).collect(),
        };
        AppArea { entries }
    }

    /// Whether a release may carry `path` (with `runtime`, also the runtime's files).
    pub fn contains(&self, path: &str, runtime: bool) -> bool {
        let low = path.to_lowercase();
        matches_any(&low, self.entries.iter().map(String::as_str))
            || (runtime && matches_any(&low, RUNTIME_PATHS.iter().copied()))
    }
}

fn matches_any<'a>(low: &str, entries: impl Iterator<Item = &'a str>) -> bool {
    entries.into_iter().any(|e| {
        if e.ends_with('/') {
            low.starts_with(e)
        } else if let Some(ext) = e.strip_prefix('*') {
            ext.starts_with('.') && !e.contains('/') && !low.contains('/') && low.ends_with(ext)
        } else {
            low == e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_area_takes_app_files_and_leaves_the_rest() {
        let a = AppArea::default();
        for p in [
            "main.py",
            "sensors.py",
            "fw.mpy",
            "app/x/y.py",
            "lib/pkg/m.py",
            "www/i.html",
            "config/ota.json",
            "APP/X.PY",
        ] {
            assert!(a.contains(p, false), "{p}");
        }
        for p in [
            "README.md",
            "tests/t.py",
            "config/other.json",
            "sub/main.py",
            "x.txt",
        ] {
            assert!(!a.contains(p, false), "{p}");
        }
        // boot.py (a top-level *.py) and lib/uota/ are in the area by shape;
        // the device protects them unless the release carries the runtime.
        assert!(a.contains("boot.py", true));
        assert!(!a.contains("README.md", true));
    }

    #[test]
    fn configured_area_replaces_the_default() {
        let a = AppArea::new(Some(&["src/".to_string(), "/main.py".to_string()]));
        assert!(a.contains("src/a.py", false) && a.contains("main.py", false));
        assert!(!a.contains("app/a.py", false));
    }
}
