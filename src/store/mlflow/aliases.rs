//! MLflow aliases as the routing policy: the operator's routing file may name a version by an alias of the model
//! in the registry (`stable = "@champion"`, a variant's `version = "@challenger"`, the shadow's `version = "@shadow"`);
//! this turns it into the routing file sluice reads, with each alias replaced by the version it points to now. So
//! moving an alias in MLflow moves the traffic within one poll, with every guarantee of a routing-file change
//! (versions load before traffic, the schema guard, automatic rollback). An alias that is not set takes its part
//! out: `stable` falls back to the model's default version, a variant or the shadow is left out; each is reported.
//!
//! Pure: no I/O, so each rule is unit-tested here.

use std::collections::{BTreeMap, HashMap};

use toml_edit::{DocumentMut, Item, Value};

/// The aliases of each registered model: model → alias → version.
pub type Aliases = HashMap<String, BTreeMap<String, u64>>;

/// The routing file with aliases resolved, and what could not be resolved: (model, message).
pub fn resolve(
    template: &str,
    aliases: &Aliases,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut document: DocumentMut = template.parse().map_err(|e| format!("{e}"))?;
    let mut unresolved = Vec::new();
    for (model, item) in document.iter_mut() {
        let model = model.get().to_owned();
        let Some(table) = item.as_table_like_mut() else {
            continue;
        };
        let known = aliases.get(&model);
        let mut lookup = |alias: &str, part: &str| -> Option<i64> {
            let version = known.and_then(|a| a.get(alias)).copied();
            if version.is_none() {
                unresolved.push((
                    model.clone(),
                    format!("alias @{alias} is not set in MLflow: {part} left out"),
                ));
            }
            version.and_then(|v| i64::try_from(v).ok())
        };
        // `stable = "@champion"`.
        if let Some(alias) = alias_of(table.get("stable")) {
            match lookup(&alias, "stable (the default version serves)") {
                Some(v) => {
                    table.insert("stable", toml_edit::value(v));
                }
                None => {
                    table.remove("stable");
                }
            }
        }
        // `shadow = { version = "@shadow", … }`.
        if let Some(shadow) = table.get_mut("shadow").and_then(Item::as_table_like_mut) {
            if let Some(alias) = alias_of(shadow.get("version")) {
                match lookup(&alias, "the shadow") {
                    Some(v) => {
                        shadow.insert("version", toml_edit::value(v));
                    }
                    None => {
                        table.remove("shadow");
                    }
                }
            }
        }
        // `variants = [{ name = "canary", version = "@challenger", weight = 10.0 }]`, inline or as tables.
        let Some(variants) = table.get_mut("variants") else {
            continue;
        };
        // Each variant's version: kept, set from its alias, or the variant left out.
        let mut decide = |version: Option<&str>, name: Option<&str>| match version
            .and_then(alias_name)
        {
            None => Some(None),
            Some(alias) => lookup(&alias, &format!("variant {}", name.unwrap_or("?"))).map(Some),
        };
        if let Some(array) = variants.as_array_mut() {
            let mut keep = Vec::new();
            for value in array.iter_mut() {
                let variant = value.as_inline_table_mut();
                let decided = variant.as_ref().map_or(Some(None), |v| {
                    decide(
                        v.get("version").and_then(Value::as_str),
                        v.get("name").and_then(Value::as_str),
                    )
                });
                if let (Some(variant), Some(Some(version))) = (variant, decided) {
                    variant.insert("version", version.into());
                }
                keep.push(decided.is_some());
            }
            let mut kept = keep.into_iter();
            array.retain(|_| kept.next().unwrap_or(true));
        } else if let Some(tables) = variants.as_array_of_tables_mut() {
            let mut keep = Vec::new();
            for variant in tables.iter_mut() {
                let decided = decide(
                    variant.get("version").and_then(Item::as_str),
                    variant.get("name").and_then(Item::as_str),
                );
                if let Some(Some(version)) = decided {
                    variant.insert("version", toml_edit::value(version));
                }
                keep.push(decided.is_some());
            }
            let mut kept = keep.into_iter();
            tables.retain(|_| kept.next().unwrap_or(true));
        }
    }
    Ok((document.to_string(), unresolved))
}

/// `"@name"` → `name`.
fn alias_name(text: &str) -> Option<String> {
    text.strip_prefix('@')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

fn alias_of(item: Option<&Item>) -> Option<String> {
    item.and_then(Item::as_str).and_then(alias_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, &str, u64)]) -> Aliases {
        let mut all = Aliases::new();
        for (model, alias, version) in pairs {
            all.entry((*model).to_owned())
                .or_default()
                .insert((*alias).to_owned(), *version);
        }
        all
    }

    #[test]
    fn aliases_become_the_versions_they_point_to() {
        let template = r#"# the team's policy
[iris]
stable = "@champion"
key_header = "x-user-id"
variants = [{ name = "canary", version = "@challenger", weight = 10.0 }, { name = "b", version = 7, weight = 5.0 }]
shadow = { version = "@shadow", sample_rate = 0.5 }

[digits]
stable = 3
[[digits.variants]]
name = "canary"
version = "@challenger"
weight = 20.0
"#;
        let all = aliases(&[
            ("iris", "champion", 2),
            ("iris", "challenger", 3),
            ("iris", "shadow", 4),
            ("digits", "challenger", 9),
        ]);
        let (text, unresolved) = resolve(template, &all).unwrap();
        assert!(unresolved.is_empty(), "{unresolved:?}");
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["iris"]["stable"].as_integer(), Some(2));
        assert_eq!(
            parsed["iris"]["variants"][0]["version"].as_integer(),
            Some(3)
        );
        assert_eq!(
            parsed["iris"]["variants"][1]["version"].as_integer(),
            Some(7)
        );
        assert_eq!(parsed["iris"]["shadow"]["version"].as_integer(), Some(4));
        assert_eq!(parsed["iris"]["key_header"].as_str(), Some("x-user-id"));
        assert_eq!(
            parsed["digits"]["variants"][0]["version"].as_integer(),
            Some(9)
        );
        assert!(text.starts_with("# the team's policy"), "comments stay");
    }

    #[test]
    fn an_alias_not_set_takes_its_part_out_and_says_so() {
        let template = r#"[iris]
stable = "@champion"
variants = [{ name = "canary", version = "@challenger", weight = 10.0 }, { name = "b", version = 7, weight = 5.0 }]
shadow = { version = "@shadow", sample_rate = 0.5 }
"#;
        let (text, unresolved) = resolve(template, &aliases(&[("iris", "champion", 2)])).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["iris"]["stable"].as_integer(), Some(2));
        let variants = parsed["iris"]["variants"].as_array().unwrap();
        assert_eq!(variants.len(), 1);
        assert_eq!(variants[0]["name"].as_str(), Some("b"));
        assert!(parsed["iris"].get("shadow").is_none());
        let messages: Vec<&str> = unresolved.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("@challenger") || messages[1].contains("@challenger"));
        let (text, unresolved) =
            resolve("[iris]\nstable = \"@champion\"\n", &Aliases::new()).unwrap();
        assert!(toml::from_str::<toml::Value>(&text).unwrap()["iris"]
            .get("stable")
            .is_none());
        assert_eq!(unresolved[0].0, "iris");
        assert!(resolve("[iris\n", &Aliases::new()).is_err());
    }
}
