//! Contact cards: the CRM's contacts of each account (name, company, phone
//! numbers, email, notes, tags), kept in the store and indexed in memory by
//! phone number, so that a ringing call can show whose number it is before
//! the agent answers. Sans-IO: changes return the store row to write; the
//! caller writes it, then applies the change.

mod number;

pub use number::{normalise, same_number};

/// Whether `number` is one of `c`'s.
pub fn has_number(c: &Contact, number: &str) -> bool {
    c.phones.iter().any(|p| same_number(p, number))
}

use crate::store::{Key, StoreOp, Table, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Longest name, company, email or tag; most numbers and tags per card;
/// longest notes.
const MAX_FIELD: usize = 200;
const MAX_LIST: usize = 20;
const MAX_NOTES: usize = 4000;

/// One contact card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: u64,
    pub account: String,
    pub name: String,
    #[serde(default)]
    pub company: String,
    /// As entered; matched by [`same_number`].
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The extension of the user who created it.
    #[serde(default)]
    pub created_by: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The fields a client sets: all on creation (name required), any on a
/// change (absent ones stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactFields {
    pub name: Option<String>,
    pub company: Option<String>,
    pub phones: Option<Vec<String>>,
    pub email: Option<String>,
    pub notes: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("no contact {0}")]
    NotFound(u64),
    /// A field's value is not acceptable (the field and why).
    #[error("{0}")]
    Invalid(String),
    #[error("only its creator, admins and owners may delete a contact")]
    Forbidden,
    #[error("the change could not be stored")]
    Store,
}

/// What one account's contacts look like to a change: the id to give next.
#[derive(Debug, Default)]
pub struct ContactBook {
    /// By id (ids are unique across accounts).
    cards: BTreeMap<u64, Arc<Contact>>,
    /// Last up-to-7 digits of each number → ids, per account.
    by_digits: HashMap<(String, String), Vec<u64>>,
    next_id: u64,
}

/// The digits a number is indexed by: its last [`number::MIN_SUFFIX_DIGITS`]
/// (every pair [`same_number`] matches shares them).
fn index_digits(number: &str) -> Option<String> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| digits[digits.len().saturating_sub(number::MIN_SUFFIX_DIGITS)..].to_string())
}

impl ContactBook {
    /// The book from the store's rows.
    pub fn from_rows(rows: Vec<(Key, Value)>) -> ContactBook {
        let mut book = ContactBook::default();
        for c in rows.into_iter().filter_map(|(_, v)| v.json::<Contact>()) {
            book.insert(c);
        }
        book
    }

    fn insert(&mut self, c: Contact) {
        self.next_id = self.next_id.max(c.id + 1);
        for p in &c.phones {
            if let Some(d) = index_digits(p) {
                let ids = self.by_digits.entry((c.account.clone(), d)).or_default();
                if !ids.contains(&c.id) {
                    ids.push(c.id);
                }
            }
        }
        self.cards.insert(c.id, Arc::new(c));
    }

    fn remove(&mut self, id: u64) -> Option<Arc<Contact>> {
        let c = self.cards.remove(&id)?;
        for p in &c.phones {
            if let Some(d) = index_digits(p) {
                let key = (c.account.clone(), d);
                if let Some(ids) = self.by_digits.get_mut(&key) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_digits.remove(&key);
                    }
                }
            }
        }
        Some(c)
    }

    /// The contact of `account` with `id`.
    pub fn get(&self, account: &str, id: u64) -> Result<Arc<Contact>, ContactError> {
        self.cards
            .get(&id)
            .filter(|c| c.account == account)
            .cloned()
            .ok_or(ContactError::NotFound(id))
    }

    /// The contact of `account` one of whose numbers is `number` (the
    /// lowest id when several are).
    pub fn lookup(&self, account: &str, number: &str) -> Option<Arc<Contact>> {
        let ids = self.by_digits.get(&(account.to_string(), index_digits(number)?))?;
        ids.iter()
            .filter_map(|id| self.cards.get(id))
            .filter(|c| has_number(c, number))
            .min_by_key(|c| c.id)
            .cloned()
    }

    /// Contacts of `account` whose name, company, email, notes, numbers or
    /// tags contain `text` (any case; all if empty) and that carry `tag`,
    /// by id, from the one after `after`, at most `limit`.
    pub fn search(&self, account: &str, text: &str, tag: Option<&str>, after: u64, limit: usize) -> Vec<Arc<Contact>> {
        let text = text.to_lowercase();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        let matches = |c: &Contact| {
            let in_text = text.is_empty()
                || [&c.name, &c.company, &c.email, &c.notes]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&text))
                || c.tags.iter().any(|t| t.to_lowercase().contains(&text))
                || (digits.len() >= 3
                    && c.phones.iter().any(|p| {
                        p.chars()
                            .filter(char::is_ascii_digit)
                            .collect::<String>()
                            .contains(&digits)
                    }));
            in_text && tag.is_none_or(|t| c.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
        };
        self.cards
            .range(after.saturating_add(1)..)
            .map(|(_, c)| c)
            .filter(|c| c.account == account && matches(c))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A new contact of `account` made by `by`: the card and its row.
    pub fn create(
        &self,
        account: &str,
        by: &str,
        fields: ContactFields,
        now_ms: u64,
    ) -> Result<(Contact, StoreOp), ContactError> {
        if fields.name.is_none() {
            return Err(ContactError::Invalid("name: required".into()));
        }
        let blank = Contact {
            id: self.next_id.max(1),
            account: account.to_string(),
            name: String::new(),
            company: String::new(),
            phones: Vec::new(),
            email: String::new(),
            notes: String::new(),
            tags: Vec::new(),
            created_by: by.to_string(),
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        let c = apply(blank, fields)?;
        let op = row(&c);
        Ok((c, op))
    }

    /// Contact `id` of `account` with `fields` changed: the card and its row.
    pub fn update(
        &self,
        account: &str,
        id: u64,
        fields: ContactFields,
        now_ms: u64,
    ) -> Result<(Contact, StoreOp), ContactError> {
        let mut c = apply((*self.get(account, id)?).clone(), fields)?;
        c.updated_ms = now_ms;
        let op = row(&c);
        Ok((c, op))
    }

    /// The row that deletes contact `id`, if `by` may (its creator, or an
    /// admin or owner).
    pub fn delete(&self, account: &str, id: u64, by: &str, admin: bool) -> Result<StoreOp, ContactError> {
        let c = self.get(account, id)?;
        if !admin && c.created_by != by {
            return Err(ContactError::Forbidden);
        }
        Ok(StoreOp::delete(Table::Contact, key(id)))
    }

    /// Makes a written change part of the book: a card created or
    /// changed, or (None) deleted.
    pub fn applied(&mut self, id: u64, card: Option<Contact>) {
        self.remove(id);
        if let Some(c) = card {
            self.insert(c);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }
}

fn key(id: u64) -> Key {
    Key::text(format!("{id:020}"))
}

fn row(c: &Contact) -> StoreOp {
    StoreOp::put_json(Table::Contact, key(c.id), c).expect("contacts serialize")
}

/// `fields` set on `c`, each checked.
fn apply(mut c: Contact, fields: ContactFields) -> Result<Contact, ContactError> {
    fn invalid<T>(m: String) -> Result<T, ContactError> {
        Err(ContactError::Invalid(m))
    }
    let short = |name: &str, v: String, max: usize| {
        if v.chars().count() > max {
            return invalid(format!("{name}: longer than {max} characters"));
        }
        if v.chars().any(|ch| ch.is_control() && ch != '\n') {
            return invalid(format!("{name}: control characters"));
        }
        Ok(v.trim().to_string())
    };
    if let Some(v) = fields.name {
        c.name = short("name", v, MAX_FIELD)?;
        if c.name.is_empty() {
            return invalid("name: empty".into());
        }
        if c.name.contains('\n') {
            return invalid("name: more than one line".into());
        }
    }
    if let Some(v) = fields.company {
        c.company = short("company", v, MAX_FIELD)?;
    }
    if let Some(v) = fields.email {
        let v = short("email", v, MAX_FIELD)?;
        if !v.is_empty() && !v.split_once('@').is_some_and(|(a, b)| !a.is_empty() && b.contains('.')) {
            return invalid(format!("email: {v:?} is not an address"));
        }
        c.email = v;
    }
    if let Some(v) = fields.notes {
        c.notes = short("notes", v, MAX_NOTES)?;
    }
    if let Some(list) = fields.phones {
        if list.len() > MAX_LIST {
            return invalid(format!("phones: more than {MAX_LIST}"));
        }
        c.phones = list
            .into_iter()
            .map(|p| {
                let p = short("phones", p, 40)?;
                let digits = p.chars().filter(char::is_ascii_digit).count();
                let allowed = p.chars().all(|ch| ch.is_ascii_digit() || " +-().".contains(ch));
                if !allowed || digits < 2 {
                    return invalid(format!("phones: {p:?} is not a phone number"));
                }
                Ok(p)
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(list) = fields.tags {
        if list.len() > MAX_LIST {
            return invalid(format!("tags: more than {MAX_LIST}"));
        }
        c.tags = list
            .into_iter()
            .map(|t| {
                let t = short("tags", t, 50)?;
                // Tags travel comma-separated in X-Contact-Tags.
                if t.is_empty() || t.contains([',', '\n']) {
                    return invalid(format!("tags: {t:?} (empty, or with a comma)"));
                }
                Ok(t)
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book_with(cards: &[(&str, &str, &[&str])]) -> ContactBook {
        let mut book = ContactBook::default();
        for (account, name, phones) in cards {
            let fields = ContactFields {
                name: Some(name.to_string()),
                phones: Some(phones.iter().map(|p| p.to_string()).collect()),
                ..Default::default()
            };
            let (c, _) = book.create(account, "1004", fields, 1).unwrap();
            book.applied(c.id, Some(c));
        }
        book
    }

    #[test]
    fn a_number_is_found_however_it_is_written_and_only_in_its_account() {
        let book = book_with(&[
            ("a.test", "Ana García", &["+34 600 123 456", "91 555 12 12"]),
            ("b.test", "Other", &["+34600123456"]),
        ]);
        for n in ["+34600123456", "0034600123456", "600123456", "600-123-456"] {
            assert_eq!(
                book.lookup("a.test", n).map(|c| c.name.clone()).as_deref(),
                Some("Ana García"),
                "{n}"
            );
        }
        assert_eq!(book.lookup("a.test", "915551212").unwrap().name, "Ana García");
        assert!(
            book.lookup("a.test", "+44600123456").is_none(),
            "another country's number"
        );
        assert!(
            book.lookup("a.test", "123456").is_none(),
            "a shorter number is not a match"
        );
        assert_eq!(book.lookup("b.test", "600123456").unwrap().name, "Other");
        assert!(book.lookup("c.test", "600123456").is_none());
    }

    #[test]
    fn changes_keep_the_number_index_true() {
        let mut book = book_with(&[("a.test", "Ana", &["600123456"])]);
        let id = book.search("a.test", "", None, 0, 10)[0].id;
        let fields = ContactFields {
            phones: Some(vec!["700000001".into()]),
            ..Default::default()
        };
        let (c, op) = book.update("a.test", id, fields, 2).unwrap();
        assert_eq!((op.table, c.updated_ms, c.name.as_str()), (Table::Contact, 2, "Ana"));
        book.applied(id, Some(c));
        assert!(book.lookup("a.test", "600123456").is_none());
        assert_eq!(book.lookup("a.test", "700000001").unwrap().id, id);
        assert_eq!(book.delete("a.test", id, "1005", false), Err(ContactError::Forbidden));
        assert!(book.delete("a.test", id, "1004", false).is_ok());
        assert!(book.delete("a.test", id, "1001", true).is_ok());
        assert_eq!(book.delete("b.test", id, "1001", true), Err(ContactError::NotFound(id)));
        book.applied(id, None);
        assert!(book.lookup("a.test", "700000001").is_none() && book.is_empty());
    }

    #[test]
    fn bad_fields_are_refused_with_the_field_named() {
        let book = ContactBook::default();
        let bad = |f: ContactFields| match book.create("a.test", "1", f, 1) {
            Err(ContactError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        let named = |n: &str| ContactFields {
            name: Some(n.into()),
            ..Default::default()
        };
        assert!(bad(ContactFields::default()).starts_with("name"));
        assert!(bad(named("  ")).starts_with("name"));
        assert!(bad(ContactFields {
            email: Some("nope".into()),
            ..named("A")
        })
        .starts_with("email"));
        assert!(bad(ContactFields {
            phones: Some(vec!["call me".into()]),
            ..named("A")
        })
        .starts_with("phones"));
        assert!(bad(ContactFields {
            tags: Some(vec!["a,b".into()]),
            ..named("A")
        })
        .starts_with("tags"));
        assert!(bad(named(&"x".repeat(201))).contains("longer"));
    }

    #[test]
    fn search_matches_text_numbers_and_tags_in_id_order_with_paging() {
        let mut book = book_with(&[
            ("a.test", "Ana", &["600123456"]),
            ("a.test", "Bea", &["600999999"]),
            ("a.test", "Carla", &["700123456"]),
        ]);
        let (c, _) = book
            .update(
                "a.test",
                3,
                ContactFields {
                    tags: Some(vec!["VIP".into()]),
                    company: Some("Acme".into()),
                    ..Default::default()
                },
                2,
            )
            .unwrap();
        book.applied(3, Some(c));
        let names = |v: Vec<Arc<Contact>>| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(book.search("a.test", "123 456", None, 0, 10)), ["Ana", "Carla"]);
        assert_eq!(names(book.search("a.test", "acme", None, 0, 10)), ["Carla"]);
        assert_eq!(names(book.search("a.test", "", Some("vip"), 0, 10)), ["Carla"]);
        assert_eq!(names(book.search("a.test", "", None, 0, 2)), ["Ana", "Bea"]);
        assert_eq!(names(book.search("a.test", "", None, 2, 2)), ["Carla"]);
        assert!(book.search("b.test", "", None, 0, 10).is_empty());
    }
}
