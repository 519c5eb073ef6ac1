//! Custom fields of clients: a JSON object of text values under lower-case keys, stored as
//! text on both backends (migration 0012). JSON: `{"city": "Москва"}`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Db;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Fields(pub BTreeMap<String, String>);

impl Fields {
    /// Sets a field; the empty value removes it (keys are validated by the caller).
    pub fn set(&mut self, key: String, value: String) {
        if value.is_empty() {
            self.0.remove(&key);
        } else {
            self.0.insert(key, value);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The stored form: a JSON object.
    pub fn stored(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of strings serialises")
    }

    /// For tables: `city=Москва, zip=101000`.
    pub fn shown(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(", ")
    }
}

impl From<String> for Fields {
    /// From the stored form (written only by us; anything unreadable reads as no fields).
    fn from(stored: String) -> Fields {
        Fields(serde_json::from_str(&stored).unwrap_or_default())
    }
}

/// SQL: the client row `alias` has no field under the key in parameter `$n`.
pub fn lacks(db: &Db, alias: &str, n: usize) -> String {
    match db {
        // Keys hold no `"` (validate::label), so the quoted JSON path is exact.
        Db::Sqlite(_) => format!("json_extract({alias}.fields, '$.\"' || ${n} || '\"') IS NULL"),
        Db::Postgres(_) => format!("NOT (CAST({alias}.fields AS jsonb) ? ${n})"),
    }
}

/// SQL: every key used by the rows of `clients` visible in `$1` (NULL: all).
pub fn keys_sql(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => {
            "SELECT DISTINCT j.key FROM clients c, json_each(c.fields) j \
             WHERE ($1 IS NULL OR c.owner_id = $1) AND c.fields <> '{}' ORDER BY 1"
        }
        Db::Postgres(_) => {
            "SELECT DISTINCT jsonb_object_keys(CAST(fields AS jsonb)) FROM clients \
             WHERE ($1 IS NULL OR owner_id = $1) AND fields <> '{}' ORDER BY 1"
        }
    }
}
