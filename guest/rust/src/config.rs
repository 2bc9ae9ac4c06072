//! The policy's settings: the `[policy.config]` table of the gateway config,
//! which the host hands to `init` as JSON text and the SDK parses into a
//! [`Config`].

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The `[policy.config]` table of the gateway config, handed to
/// [`Policy::init`](crate::Policy::init).
///
/// Typed getters return `Ok(None)` when a key is absent (or JSON `null`)
/// and an error when it is present with the wrong type, so a typo in the
/// operator's config is reported instead of silently ignored. A
/// [`ConfigError`] converts into the `String` that `init` returns, so `?`
/// works there.
///
/// ```
/// use sluice_guest::Config;
///
/// # fn main() -> Result<(), String> {
/// let config = Config::from_json(r#"{
///     "zones": ["zen.example"], "threshold": 3, "dry_run": true,
///     "reply": { "code": 554 }
/// }"#)?;
/// assert_eq!(config.list_str("zones")?, Some(vec!["zen.example".to_string()]));
/// assert_eq!(config.u32("threshold")?.unwrap_or(1), 3);
/// assert_eq!(config.bool("dry_run")?, Some(true));
/// assert_eq!(config.str("missing")?, None);
/// let reply = config.table("reply")?.unwrap_or_default();
/// assert_eq!(reply.u32("code")?, Some(554));
///
/// // A wrong type is an error naming the key.
/// let err = config.str("threshold").unwrap_err();
/// assert_eq!(err.to_string(), "config key `threshold`: expected a string, found a number");
/// # Ok(())
/// # }
/// ```
///
/// With serde, into the policy's own struct:
///
/// ```
/// use sluice_guest::Config;
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Settings {
///     zones: Vec<String>,
///     #[serde(default)]
///     threshold: u32,
/// }
///
/// # fn main() -> Result<(), String> {
/// let settings: Settings = Config::from_json(r#"{"zones": ["zen.example"]}"#)?.parse()?;
/// assert_eq!(settings.zones, ["zen.example"]);
/// assert_eq!(settings.threshold, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    map: Map<String, Value>,
    /// Dotted path of this table from the root ("" at the root), for
    /// error messages.
    path: String,
}

/// A config value that is missing where required, has the wrong type, or
/// is not valid JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error with this message (for checks of the policy's own).
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(err: ConfigError) -> String {
        err.message
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

impl Config {
    /// An empty table (what the host sends when the policy has no
    /// `[policy.config]`).
    #[must_use]
    pub fn empty() -> Self {
        Config::default()
    }

    /// Parse JSON text, which must be an object. Empty text counts as `{}`.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::empty());
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::new(format!("config is not valid JSON: {e}")))?;
        Config::from_value(value)
    }

    /// Wrap a JSON value, which must be an object.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Config {
                map,
                path: String::new(),
            }),
            other => Err(ConfigError::new(format!(
                "config must be a table, found {}",
                kind(&other)
            ))),
        }
    }

    /// The whole table as a JSON object.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The raw value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// Whether `key` is present (with any value but `null`).
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.present(key).is_some()
    }

    /// The keys of the table, in the order of the JSON text.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Whether the table has no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> ConfigError {
        ConfigError::new(format!(
            "config key `{}`: expected {expected}, found {}",
            self.key_path(key),
            kind(found)
        ))
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    /// A list of strings.
    pub fn list_str(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "a list of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    /// An integer from 0 to 4294967295.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an integer from 0 to 4294967295", v)),
        }
    }

    /// A signed 64-bit integer.
    pub fn i64(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an integer", v)),
        }
    }

    /// A number (integers are accepted).
    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    /// A nested table, as a `Config` whose errors name the full dotted key.
    pub fn table(&self, key: &str) -> Result<Option<Config>, ConfigError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Config {
                map: map.clone(),
                path: self.key_path(key),
            })),
            Some(other) => Err(self.wrong(key, "a table", other)),
        }
    }

    /// Deserialise the whole table into `T` with serde. Use
    /// `#[serde(deny_unknown_fields)]` on `T` to refuse misspelt keys.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(&Value::Object(self.map.clone())).map_err(|e| {
            if self.path.is_empty() {
                ConfigError::new(format!("config: {e}"))
            } else {
                ConfigError::new(format!("config table `{}`: {e}", self.path))
            }
        })
    }

    /// An error naming the first key not in `allowed`, to catch misspelt
    /// settings when using the typed getters.
    ///
    /// ```
    /// use sluice_guest::Config;
    /// let config = Config::from_json(r#"{"zone": "a", "treshold": 2}"#).unwrap();
    /// let err = config.check_keys(&["zone", "threshold"]).unwrap_err();
    /// assert_eq!(err.to_string(), "config key `treshold` is not known (known: zone, threshold)");
    /// ```
    pub fn check_keys(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.keys().find(|k| !allowed.contains(k)) {
            None => Ok(()),
            Some(unknown) => Err(ConfigError::new(format!(
                "config key `{}` is not known (known: {})",
                self.key_path(unknown),
                allowed.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_json(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn getters() {
        let c = config(
            r#"{"s": "x", "l": ["a", "b"], "n": 7, "neg": -3, "f": 0.5,
                "b": false, "t": {"inner": {"deep": 1}}, "null": null}"#,
        );
        assert_eq!(c.str("s"), Ok(Some("x")));
        assert_eq!(c.list_str("l"), Ok(Some(vec!["a".into(), "b".into()])));
        assert_eq!(c.u32("n"), Ok(Some(7)));
        assert_eq!(c.i64("neg"), Ok(Some(-3)));
        assert_eq!(c.f64("f"), Ok(Some(0.5)));
        assert_eq!(c.f64("n"), Ok(Some(7.0)));
        assert_eq!(c.bool("b"), Ok(Some(false)));
        assert_eq!(c.str("null"), Ok(None));
        assert!(!c.contains("null"));
        assert!(c.contains("s"));
        assert_eq!(c.str("absent"), Ok(None));
        let deep = c
            .table("t")
            .ok()
            .flatten()
            .and_then(|t| t.table("inner").ok().flatten())
            .unwrap_or_default();
        assert_eq!(deep.u32("deep"), Ok(Some(1)));
        assert_eq!(
            deep.str("deep").map_err(|e| e.to_string()),
            Err("config key `t.inner.deep`: expected a string, found a number".to_string())
        );
        assert_eq!(c.keys().count(), 8);
    }

    #[test]
    fn wrong_types() {
        let c = config(r#"{"n": -1, "big": 4294967296, "l": ["a", 1], "s": "x", "f": 1.5}"#);
        assert!(c.u32("n").is_err());
        assert!(c.u32("big").is_err());
        assert!(c.u32("f").is_err());
        assert!(c.i64("f").is_err());
        assert_eq!(
            c.list_str("l").map_err(String::from),
            Err("config key `l`: expected a list of strings, found a number".to_string())
        );
        assert!(c.list_str("s").is_err());
        assert!(c.bool("s").is_err());
        assert!(c.table("s").is_err());
        assert!(c.f64("s").is_err());
    }

    #[test]
    fn top_level() {
        assert_eq!(Config::from_json(""), Ok(Config::empty()));
        assert_eq!(Config::from_json("{}"), Ok(Config::empty()));
        assert!(Config::from_json("{}").is_ok_and(|c| c.is_empty()));
        assert_eq!(
            Config::from_json("[1]").map_err(String::from),
            Err("config must be a table, found a list".to_string())
        );
        assert!(
            Config::from_json("{nope")
                .is_err_and(|e| e.to_string().starts_with("config is not valid JSON"))
        );
    }

    #[test]
    fn serde_parse() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Limits {
            max: u32,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            name: String,
            limits: Limits,
        }
        let c = config(r#"{"name": "x", "limits": {"max": 3}}"#);
        assert_eq!(
            c.parse::<Settings>(),
            Ok(Settings {
                name: "x".into(),
                limits: Limits { max: 3 }
            })
        );
        let limits = c.table("limits").ok().flatten().unwrap_or_default();
        assert_eq!(limits.parse::<Limits>(), Ok(Limits { max: 3 }));
        let bad = config(r#"{"name": "x", "limits": {"max": 3}, "extra": 1}"#);
        assert!(
            bad.parse::<Settings>()
                .is_err_and(|e| e.to_string().contains("unknown field `extra`"))
        );
        let bad_inner = config(r#"{"limits": {"max": "3"}}"#)
            .table("limits")
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(
            bad_inner
                .parse::<Limits>()
                .is_err_and(|e| e.to_string().starts_with("config table `limits`: "))
        );
    }

    #[test]
    fn check_keys() {
        let c = config(r#"{"a": 1, "t": {"x": 1}}"#);
        assert_eq!(c.check_keys(&["a", "t"]), Ok(()));
        let t = c.table("t").ok().flatten().unwrap_or_default();
        assert_eq!(
            t.check_keys(&["y"]).map_err(String::from),
            Err("config key `t.x` is not known (known: y)".to_string())
        );
    }
}
