//! The vendored PVE API schema (fixtures/pve-api-subset.json): which paths and methods exist, and
//! parameter validation with PVE's error texts, so every endpoint checks exactly what PVE checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// The fixture, compiled into the binary so the simulator needs no file at run time.
pub const FIXTURE: &str = include_str!("../../fixtures/pve-api-subset.json");

/// A raw parameter value as it arrived.
#[derive(Debug, Clone)]
pub enum Raw {
    /// From a query string, a form body or the URL path.
    Text(String),
    /// From a JSON body.
    Json(Value),
}

/// One path of the schema with its methods.
pub struct Route {
    pub template: String,
    segs: Vec<String>,
    pub methods: HashMap<String, Value>,
}

/// All routes of the fixture.
pub struct Schema {
    pub routes: Vec<Route>,
}

/// Validated parameters, normalized to text (booleans as 0/1, arrays joined by '\n').
pub type Params = BTreeMap<String, String>;
/// Parameter errors: name → message.
pub type ParamErrors = BTreeMap<String, String>;

pub fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        let v: Value = serde_json::from_str(FIXTURE).unwrap_or(Value::Null);
        let mut routes = Vec::new();
        if let Value::Object(m) = v {
            for (path, methods) in m {
                let methods: HashMap<String, Value> = match methods {
                    Value::Object(mm) => mm.into_iter().collect(),
                    _ => HashMap::new(),
                };
                routes.push(Route {
                    segs: path
                        .trim_matches('/')
                        .split('/')
                        .map(str::to_string)
                        .collect(),
                    template: path,
                    methods,
                });
            }
        }
        Schema { routes }
    })
}

impl Schema {
    /// Finds the route of a concrete path (below /api2/json) and its path parameters.
    /// Literal segments win over `{param}` segments.
    pub fn find(&self, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(&Route, usize)> = None;
        for r in &self.routes {
            if r.segs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let ok = r.segs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') {
                    !s.is_empty()
                } else {
                    literal += 1;
                    t == s
                }
            });
            if ok && best.is_none_or(|b| literal > b.1) {
                best = Some((r, literal));
            }
        }
        let (r, _) = best?;
        let params = r
            .segs
            .iter()
            .zip(&segs)
            .filter_map(|(t, s)| {
                let name = t.strip_prefix('{')?.strip_suffix('}')?;
                let v = percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned();
                Some((name.to_string(), v))
            })
            .collect();
        Some((r, params))
    }
}

/// The schema of one parameter name, resolving indexed names (`net0` → `net[n]`).
fn param_schema<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(s) = props.get(name) {
        return Some(s);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() || base.is_empty() {
        return None;
    }
    props.get(&format!("{base}[n]"))
}

/// The declared return type of a property of an object-returning method (for typed output).
pub fn return_type(method: &Value, key: &str) -> Option<String> {
    let props = method.get("returns")?.get("properties")?.as_object()?;
    param_schema(props, key)?
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn regex(pat: &str) -> Option<Regex> {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().ok()?;
    if let Some(r) = c.get(pat) {
        return r.clone();
    }
    let r = Regex::new(pat).ok();
    c.insert(pat.to_string(), r.clone());
    r
}

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_node_name(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_config_id(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

fn is_storage_id(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_integer(v: &str) -> bool {
    let d = v.strip_prefix(['+', '-']).unwrap_or(v);
    !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
}

/// Checks a named PVE format; returns the PVE message on failure.
fn check_format(format: &str, v: &str) -> Result<(), String> {
    let re = |p: &str| regex(p).is_some_and(|r| r.is_match(v));
    let ok = match format {
        // the hot formats are checked by hand (regexes are slow in debug builds)
        "pve-node" => is_node_name(v),
        "pve-configid" => is_config_id(v),
        "dns-name" => re(
            r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$",
        ),
        "pve-storage-id" => is_storage_id(v),
        "pve-poolid" => re(r"^[A-Za-z0-9\-_]+(/[A-Za-z0-9\-_]+){0,2}$"),
        "pve-configid-list" => v
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(is_config_id),
        "pve-vmid-list" => v
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(|s| s.parse::<u32>().is_ok_and(|n| n >= 100)),
        "pve-storage-id-list" => v
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(|s| regex(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").is_some_and(|r| r.is_match(s))),
        "pve-tag-list" => v
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .all(|s| regex(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$").is_some_and(|r| r.is_match(s))),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match format {
        "pve-node" => "invalid format - value does not look like a valid node name".into(),
        "pve-configid" => format!("invalid format - invalid configuration ID '{v}'"),
        "dns-name" => "invalid format - value does not look like a valid DNS name".into(),
        "pve-storage-id" => {
            format!("invalid format - storage ID '{v}' contains illegal characters")
        }
        "pve-poolid" => format!("invalid format - pool name '{v}' contains illegal characters"),
        _ => format!("invalid format - value does not match format '{format}'"),
    })
}

/// Checks a property string (`[model=]virtio,bridge=vmbr0`) against its dict format.
fn check_property_string(fmt: &serde_json::Map<String, Value>, v: &str) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, s)| {
            s.get("default_key")
                .is_some_and(|d| d.as_i64() == Some(1) || d.as_bool() == Some(true))
        })
        .map(|(k, _)| k.clone());
    for (i, part) in v.split(',').enumerate() {
        if part.is_empty() {
            continue;
        }
        let (k, val) = match part.split_once('=') {
            Some((k, val)) if fmt.contains_key(k) => (k.to_string(), val),
            _ if i == 0 && default_key.is_some() => (default_key.clone().unwrap_or_default(), part),
            Some((k, val)) => (k.to_string(), val),
            None => (part.to_string(), ""),
        };
        let Some(ks) = fmt.get(&k) else {
            return Err(format!(
                "invalid format - format error\n{k}: property is not defined in schema and the schema does not allow additional properties"
            ));
        };
        if let Some(en) = ks.get("enum").and_then(Value::as_array) {
            if !en.iter().any(|e| e.as_str() == Some(val)) {
                let list: Vec<&str> = en.iter().filter_map(Value::as_str).collect();
                return Err(format!(
                    "invalid format - format error\n{k}: value '{val}' does not have a value in the enumeration '{}'",
                    list.join(", ")
                ));
            }
        }
        if ks.get("type").and_then(Value::as_str) == Some("boolean")
            && !matches!(
                val,
                "0" | "1" | "on" | "off" | "yes" | "no" | "true" | "false"
            )
        {
            return Err(format!(
                "invalid format - format error\n{k}: type check ('boolean') failed - got '{val}'"
            ));
        }
    }
    Ok(())
}

/// Validates one value against its parameter schema; returns the normalized text.
fn check_value(s: &Value, raw: &Raw) -> Result<String, String> {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("string");
    let text = match raw {
        Raw::Text(t) => t.clone(),
        Raw::Json(Value::String(t)) => t.clone(),
        Raw::Json(Value::Bool(b)) if ty == "boolean" => {
            return Ok(if *b { "1" } else { "0" }.into())
        }
        Raw::Json(Value::Array(a)) if ty == "array" => {
            return Ok(a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Raw::Json(other) => other.to_string(),
    };
    match ty {
        "boolean" => {
            if text != "0" && text != "1" {
                return Err(format!("type check ('boolean') failed - got '{text}'"));
            }
        }
        "integer" | "number" => {
            let valid = if ty == "integer" {
                is_integer(&text)
            } else {
                text.parse::<f64>().is_ok_and(f64::is_finite)
            };
            if !valid {
                return Err(format!("type check ('{ty}') failed - got '{text}'"));
            }
            let n: f64 = text.parse().unwrap_or(0.0);
            if let Some(min) = s.get("minimum").and_then(num_of) {
                if n < min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(num_of) {
                if n > max {
                    return Err(format!("value must have a maximum value of {max}"));
                }
            }
        }
        "array" => {}
        _ => {
            if let Some(max) = s.get("maxLength").and_then(num_of) {
                if text.chars().count() as f64 > max {
                    return Err(format!("value may only be {max} characters long"));
                }
            }
            if let Some(en) = s.get("enum").and_then(Value::as_array) {
                if !en.iter().any(|e| e.as_str() == Some(&text)) {
                    let list: Vec<&str> = en.iter().filter_map(Value::as_str).collect();
                    return Err(format!(
                        "value '{text}' does not have a value in the enumeration '{}'",
                        list.join(", ")
                    ));
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                if !regex(&format!("^(?:{p})$")).is_some_and(|r| r.is_match(&text)) {
                    return Err("value does not match the regex pattern".into());
                }
            }
            match s.get("format") {
                Some(Value::String(f)) => check_format(f, &text)?,
                Some(Value::Object(fmt)) => check_property_string(fmt, &text)?,
                _ => {}
            }
        }
    }
    Ok(text)
}

/// Validates all parameters of a call (path parameters included) against the method's schema.
pub fn validate(method: &Value, given: &[(String, Raw)]) -> Result<Params, ParamErrors> {
    let empty = serde_json::Map::new();
    let props = method
        .get("parameters")
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Params::new();
    let mut errors = ParamErrors::new();
    for (name, raw) in given {
        match param_schema(props, name) {
            None => {
                errors.insert(
                    name.clone(),
                    "property is not defined in schema and the schema does not allow additional properties"
                        .into(),
                );
            }
            Some(s) => match check_value(s, raw) {
                Ok(v) => {
                    match out.get_mut(name) {
                        // repeated array parameters (command=a&command=b)
                        Some(prev) if s.get("type").and_then(Value::as_str) == Some("array") => {
                            prev.push('\n');
                            prev.push_str(&v);
                        }
                        _ => {
                            out.insert(name.clone(), v);
                        }
                    }
                }
                Err(e) => {
                    errors.insert(name.clone(), e);
                }
            },
        }
    }
    for (name, s) in props {
        let optional = s
            .get("optional")
            .is_some_and(|o| o.as_i64() == Some(1) || o.as_bool() == Some(true));
        if !optional
            && !name.ends_with("[n]")
            && !out.contains_key(name)
            && !errors.contains_key(name)
        {
            errors.insert(
                name.clone(),
                "property is missing and it is not optional".into(),
            );
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn clone_schema() -> &'static Value {
        let (r, _) = schema().find("/nodes/pve1/qemu/104/clone").unwrap();
        &r.methods["POST"]
    }

    fn t(k: &str, v: &str) -> (String, Raw) {
        (k.to_string(), Raw::Text(v.to_string()))
    }

    #[test]
    fn routes_match_literals_before_params() {
        let (r, p) = schema()
            .find("/nodes/pve1/qemu/104/status/current")
            .unwrap();
        assert_eq!(r.template, "/nodes/{node}/qemu/{vmid}/status/current");
        assert_eq!(
            p,
            vec![
                ("node".into(), "pve1".into()),
                ("vmid".into(), "104".into())
            ]
        );
        assert!(schema().find("/nodes/pve1/nope").is_none());
    }

    #[test]
    fn clone_parameters_are_checked_like_pve() {
        let ok = validate(
            clone_schema(),
            &[
                t("node", "pve1"),
                t("vmid", "104"),
                t("newid", "200"),
                t("full", "0"),
                t("name", "a-b.c"),
            ],
        )
        .unwrap();
        assert_eq!(ok["full"], "0");
        let e = validate(
            clone_schema(),
            &[
                t("node", "pve1"),
                t("vmid", "104"),
                t("newid", "99"),
                t("full", "true"),
                t("name", "a_b"),
                t("bogus", "1"),
            ],
        )
        .unwrap_err();
        assert_eq!(e["full"], "type check ('boolean') failed - got 'true'");
        assert_eq!(e["newid"], "value must have a minimum value of 100");
        assert!(e["name"].contains("DNS name"));
        assert!(e["bogus"].contains("not defined in schema"));
        let e = validate(clone_schema(), &[t("node", "pve1"), t("vmid", "104")]).unwrap_err();
        assert_eq!(e["newid"], "property is missing and it is not optional");
        let j = validate(
            clone_schema(),
            &[
                t("node", "pve1"),
                t("vmid", "104"),
                ("newid".into(), Raw::Json(serde_json::json!(201))),
                ("full".into(), Raw::Json(serde_json::json!(true))),
            ],
        )
        .unwrap();
        assert_eq!(j["full"], "1");
        assert_eq!(j["newid"], "201");
    }

    #[test]
    fn snapshot_names_must_start_with_a_letter() {
        let (r, _) = schema().find("/nodes/pve1/qemu/100/snapshot").unwrap();
        let e = validate(
            &r.methods["POST"],
            &[t("node", "pve1"), t("vmid", "100"), t("snapname", "1abc")],
        )
        .unwrap_err();
        assert_eq!(
            e["snapname"],
            "invalid format - invalid configuration ID '1abc'"
        );
    }

    #[test]
    fn property_strings_reject_unknown_keys() {
        let (r, _) = schema().find("/nodes/pve1/qemu/100/config").unwrap();
        let m = &r.methods["PUT"];
        validate(
            m,
            &[
                t("node", "pve1"),
                t("vmid", "100"),
                t("net0", "virtio,bridge=vmbr0,firewall=1"),
            ],
        )
        .unwrap();
        let e = validate(
            m,
            &[
                t("node", "pve1"),
                t("vmid", "100"),
                t("net0", "virtio,bogus=1"),
            ],
        )
        .unwrap_err();
        assert!(e["net0"].contains("bogus"));
    }
}
