//! Tags of clients: stored lower-cased, sorted, each between semicolons (`;news;vip;`), so
//! "carries tag t" is a substring test for `;t;` on both backends (migration 0012).

use serde::Serialize;

use super::{Db, dialect};
use crate::auth::policy::Scope;
use crate::error::{Error, Result};
use crate::on_pool;
use crate::output::Record;
use crate::validate;

/// A set of tags (lower-case, sorted, distinct). JSON: `["news", "vip"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(pub Vec<String>);

impl Tags {
    /// Validated tags from flags (`--tag T`...).
    pub fn from_flags(field: &str, raw: &[String]) -> Result<Tags> {
        let mut tags = Tags::default();
        for t in raw {
            tags.insert(validate::tag(field, t)?);
        }
        Ok(tags)
    }

    /// The import's `tags` cell (`news;vip`): every piece must be a valid tag.
    pub fn from_cell(cell: &str) -> std::result::Result<Tags, String> {
        let mut tags = Tags::default();
        if cell.trim().is_empty() {
            return Ok(tags);
        }
        for piece in cell.split(';') {
            tags.insert(validate::label("tag", piece)?);
        }
        Ok(tags)
    }

    pub fn insert(&mut self, tag: String) {
        if let Err(at) = self.0.binary_search(&tag) {
            self.0.insert(at, tag);
        }
    }

    pub fn remove(&mut self, tag: &str) {
        self.0.retain(|t| t != tag);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form: `;news;vip;`, or `` for none.
    pub fn stored(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        format!(";{};", self.0.join(";"))
    }

    /// The import/export cell: `news;vip`.
    pub fn cell(&self) -> String {
        self.0.join(";")
    }

    /// What a stored value must contain to carry each tag: `;t;`.
    pub fn needles(&self) -> Vec<String> {
        self.0.iter().map(|t| format!(";{t};")).collect()
    }
}

impl From<String> for Tags {
    /// From the stored form.
    fn from(stored: String) -> Tags {
        Tags(
            stored
                .split(';')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

/// SQL: `column` carries the tag given as the needle in parameter `$n` (`;t;`).
pub fn carries(db: &Db, column: &str, n: usize) -> String {
    format!("{} > 0", dialect::position(db, column, &format!("${n}")))
}

/// One tag of one owner with its number of clients (`tags list`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TagCount {
    pub tag: String,
    pub clients: i64,
    pub owner_id: i64,
}

impl Record for TagCount {
    const HEADERS: &'static [&'static str] = &["tag", "clients", "owner_id"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.tag.clone(),
            self.clients.to_string(),
            self.owner_id.to_string(),
        ]
    }
}

/// Every tag in `scope` with its client count, by owner then tag.
pub async fn list(db: &Db, scope: Scope) -> Result<Vec<TagCount>> {
    let split = dialect::split_tags(db, "tags");
    let sql = format!(
        "SELECT tag, COUNT(*) AS clients, owner_id FROM ({split}) t \
         WHERE ($1 IS NULL OR owner_id = $1) GROUP BY owner_id, tag ORDER BY owner_id, tag"
    );
    on_pool!(db, p => sqlx::query_as::<_, TagCount>(&sql).bind(scope.owner()).fetch_all(p).await)
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let t = Tags::from_cell("VIP; news ;vip").unwrap();
        assert_eq!(t.0, ["news", "vip"]);
        assert_eq!(t.stored(), ";news;vip;");
        assert_eq!(t.cell(), "news;vip");
        assert_eq!(Tags::from(t.stored()), t);
        assert_eq!(Tags::from(String::new()), Tags::default());
        assert!(Tags::from_cell("a;;b").is_err());
        assert!(Tags::from_cell(&"x".repeat(65)).is_err());
    }
}
