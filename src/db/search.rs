//! The folded search key of a client: its name, email and comment in Unicode lower case with
//! accents removed, so `--search иван` finds "Иван Петров" and `--search jose` finds "José"
//! on both backends (SQLite's LIKE and lower() fold ASCII only, PostgreSQL's depend on the
//! database's locale). Stored in `clients.search_key` and compared with a plain LIKE.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Lower case, compatibility-decomposed, combining marks dropped ("Ёлка Ĳ" -> "елка ij").
pub fn fold(text: &str) -> String {
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The stored key of a client. Fields are joined by a line break, which no search term from
/// the command line spans by accident.
pub fn key(email: &str, full_name: &str, comment: &str) -> String {
    fold(&format!("{full_name}\n{email}\n{comment}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents_beyond_ascii() {
        assert_eq!(fold("Иван Петров"), "иван петров");
        assert_eq!(fold("ИВАН"), fold("иван"));
        assert_eq!(fold("José Müller"), "jose muller");
        assert_eq!(fold("Ёжик"), fold("ежик"));
        assert_eq!(fold("BETH"), "beth");
        assert!(key("a@x.ru", "Иван", "").contains(&fold("иВАн")));
    }
}
