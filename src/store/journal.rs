//! The rows a management write changed, for shared mode.
//!
//! The databases whose truth is PostgreSQL's in shared mode (projects,
//! keys, users, teams, deployments, credentials, sign-ins, the starts of
//! budget windows, and the indexes) are each wrapped in a [`Replicated`]: it reads like
//! the heed database it wraps, and its `put` and `delete` also note the
//! row in the store's [`Journal`] while a management write is open. The
//! management code therefore writes LMDB as it always did; what it wrote
//! is what is sent to PostgreSQL, and what other nodes apply to their own
//! replica ([`Table::decode`]).
//!
//! Rows travel as `(table, id, body)`: the id as text (a record's name, or
//! hex for binary keys) and the body as JSON of the record (hex for the
//! indexes' values), so that PostgreSQL holds records a person can query.
//! The usage ledger (counts, spend, leases) is not here: it is each node's
//! own, and reaches PostgreSQL through leases (see `shared`).

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use heed::types::Bytes;
use heed::{BytesEncode, Database, RwTxn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StoreError;
use super::logins::Login;
use super::model::{Credential, Deployment, KeyRecord, Project, Team, User};

/// How a table's keys are written as text.
#[derive(Debug, Clone, Copy)]
enum KeyForm {
    /// UTF-8 keys, as they are.
    Text,
    /// Binary keys (ids, hashes), in lower-case hex.
    Hex,
}

/// How a table's values are written as JSON.
#[derive(Clone, Copy)]
enum ValueForm {
    /// A record stored with bincode: JSON of the same record.
    Record {
        to_json: fn(&[u8]) -> Result<Value, StoreError>,
        from_json: fn(&Value) -> Result<Vec<u8>, StoreError>,
    },
    /// Raw bytes (an index's value: an id), as a hex string.
    Hex,
}

/// One replicated database: its name (the LMDB database's, and the
/// `tbl` column in PostgreSQL) and the text forms of its rows.
pub struct Table {
    pub name: &'static str,
    key: KeyForm,
    value: ValueForm,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn record<T: Serialize + DeserializeOwned>() -> ValueForm {
    ValueForm::Record {
        to_json: to_json::<T>,
        from_json: from_json::<T>,
    }
}

fn to_json<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<Value, StoreError> {
    let record: T = bincode::deserialize(bytes)
        .map_err(|e| StoreError::Invalid(format!("a stored record cannot be read: {e}")))?;
    serde_json::to_value(record)
        .map_err(|e| StoreError::Invalid(format!("a record cannot be written as JSON: {e}")))
}

fn from_json<T: Serialize + DeserializeOwned>(value: &Value) -> Result<Vec<u8>, StoreError> {
    let record = T::deserialize(value)
        .map_err(|e| StoreError::Invalid(format!("a replicated record cannot be read: {e}")))?;
    bincode::serialize(&record)
        .map_err(|e| StoreError::Invalid(format!("a record cannot be stored: {e}")))
}

pub static PROJECTS: Table = Table {
    name: "projects",
    key: KeyForm::Hex,
    value: record::<Project>(),
};
pub static PROJECT_NAMES: Table = Table {
    name: "project_names",
    key: KeyForm::Text,
    value: ValueForm::Hex,
};
pub static KEYS: Table = Table {
    name: "keys",
    key: KeyForm::Hex,
    value: record::<KeyRecord>(),
};
pub static KEY_HASHES: Table = Table {
    name: "key_hashes",
    key: KeyForm::Hex,
    value: ValueForm::Hex,
};
pub static USERS: Table = Table {
    name: "users",
    key: KeyForm::Text,
    value: record::<User>(),
};
pub static DEPLOYMENTS: Table = Table {
    name: "deployments",
    key: KeyForm::Text,
    value: record::<Deployment>(),
};
pub static CREDENTIALS: Table = Table {
    name: "credentials",
    key: KeyForm::Text,
    value: record::<Credential>(),
};
pub static TEAMS: Table = Table {
    name: "teams",
    key: KeyForm::Text,
    value: record::<Team>(),
};
/// The start of each payer's budget window, as management set it: every
/// node counts the same windows from it. (A node moves its copy forward as
/// windows pass; those moves are its own, and the same on every node.)
pub static BUDGET_WINDOWS: Table = Table {
    name: "budget_windows",
    key: KeyForm::Hex,
    value: record::<i64>(),
};
pub static LOGINS: Table = Table {
    name: "logins",
    key: KeyForm::Text,
    value: record::<Login>(),
};

/// Every replicated table.
pub static TABLES: [&Table; 10] = [
    &PROJECTS,
    &PROJECT_NAMES,
    &KEYS,
    &KEY_HASHES,
    &USERS,
    &DEPLOYMENTS,
    &CREDENTIALS,
    &TEAMS,
    &LOGINS,
    &BUDGET_WINDOWS,
];

/// A row as it travels: `body` is `None` for a deleted row.
#[derive(Debug, Clone)]
pub struct Row {
    pub table: &'static Table,
    pub id: String,
    pub body: Option<Value>,
}

impl Table {
    pub fn named(name: &str) -> Option<&'static Table> {
        TABLES.iter().copied().find(|t| t.name == name)
    }

    fn id_text(&self, key: &[u8]) -> Result<String, StoreError> {
        match self.key {
            KeyForm::Text => std::str::from_utf8(key)
                .map(str::to_owned)
                .map_err(|_| StoreError::Invalid(format!("a key of {} is not UTF-8", self.name))),
            KeyForm::Hex => Ok(hex(key)),
        }
    }

    fn id_bytes(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        match self.key {
            KeyForm::Text => Ok(id.as_bytes().to_vec()),
            KeyForm::Hex => unhex(id),
        }
    }

    /// A stored row as it travels.
    pub fn encode(&'static self, key: &[u8], value: Option<&[u8]>) -> Result<Row, StoreError> {
        let body = match (value, self.value) {
            (None, _) => None,
            (Some(bytes), ValueForm::Record { to_json, .. }) => Some(to_json(bytes)?),
            (Some(bytes), ValueForm::Hex) => Some(Value::String(hex(bytes))),
        };
        Ok(Row {
            table: self,
            id: self.id_text(key)?,
            body,
        })
    }

    /// A row as it is stored: its key, and its value (`None`: deleted).
    pub fn decode(&self, row: &Row) -> Result<(Vec<u8>, Option<Vec<u8>>), StoreError> {
        let value = match (&row.body, self.value) {
            (None, _) => None,
            (Some(body), ValueForm::Record { from_json, .. }) => Some(from_json(body)?),
            (Some(Value::String(text)), ValueForm::Hex) => Some(unhex(text)?),
            (Some(_), ValueForm::Hex) => {
                return Err(StoreError::Invalid(format!(
                    "a row of {} is not a hex string",
                    self.name
                )));
            }
        };
        Ok((self.id_bytes(&row.id)?, value))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || StoreError::Invalid(format!("{text:?} is not hex"));
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// The rows changed by the management write in progress, when one is
/// journaled (shared mode). LMDB lets one write transaction at a time, so
/// the journal is only ever touched by the thread that holds it.
#[derive(Debug, Default)]
pub struct Journal {
    rows: Mutex<Option<Vec<Noted>>>,
}

/// A row as written: its table, key and value (`None`: deleted).
type Noted = (&'static Table, Vec<u8>, Option<Vec<u8>>);

impl Journal {
    /// Starts noting rows (a management write opened).
    pub fn open(&self) {
        *self.lock() = Some(Vec::new());
    }

    /// Stops noting rows and returns those noted, last write of a row
    /// only, in the order first written.
    pub fn close(&self) -> Result<Vec<Row>, StoreError> {
        let Some(noted) = self.lock().take() else {
            return Ok(Vec::new());
        };
        let mut rows: Vec<Row> = Vec::with_capacity(noted.len());
        for (table, key, value) in noted {
            let row = table.encode(&key, value.as_deref())?;
            match rows
                .iter_mut()
                .find(|r| std::ptr::eq(r.table, table) && r.id == row.id)
            {
                Some(earlier) => *earlier = row,
                None => rows.push(row),
            }
        }
        Ok(rows)
    }

    /// Drops what was noted (the write was abandoned).
    pub fn discard(&self) {
        *self.lock() = None;
    }

    fn note(&self, table: &'static Table, key: &[u8], value: Option<&[u8]>) {
        if let Some(rows) = self.lock().as_mut() {
            rows.push((table, key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Noted>>> {
        // A panic while the lock was held left at worst a partial list,
        // which the next `open` replaces.
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A heed database whose writes are noted in the journal. Reads go to the
/// database itself (`Deref`).
pub struct Replicated<KC, DC> {
    db: Database<KC, DC>,
    table: &'static Table,
    journal: Arc<Journal>,
}

impl<KC, DC> Deref for Replicated<KC, DC> {
    type Target = Database<KC, DC>;
    fn deref(&self) -> &Database<KC, DC> {
        &self.db
    }
}

impl<KC: 'static, DC: 'static> Replicated<KC, DC> {
    pub fn new(db: Database<KC, DC>, table: &'static Table, journal: Arc<Journal>) -> Self {
        Self { db, table, journal }
    }

    /// The database with its rows as bytes, for applying replicated rows.
    pub fn raw(&self) -> Database<Bytes, Bytes> {
        self.db.remap_types::<Bytes, Bytes>()
    }

    pub fn put<'a>(
        &self,
        txn: &mut RwTxn<'_>,
        key: &'a KC::EItem,
        data: &'a DC::EItem,
    ) -> heed::Result<()>
    where
        KC: BytesEncode<'a>,
        DC: BytesEncode<'a>,
    {
        let key: Cow<'a, [u8]> = KC::bytes_encode(key).map_err(heed::Error::Encoding)?;
        let data: Cow<'a, [u8]> = DC::bytes_encode(data).map_err(heed::Error::Encoding)?;
        self.raw().put(txn, &key, &data)?;
        self.journal.note(self.table, &key, Some(&data));
        Ok(())
    }

    pub fn delete<'a>(&self, txn: &mut RwTxn<'_>, key: &'a KC::EItem) -> heed::Result<bool>
    where
        KC: BytesEncode<'a>,
    {
        let key: Cow<'a, [u8]> = KC::bytes_encode(key).map_err(heed::Error::Encoding)?;
        let deleted = self.raw().delete(txn, &key)?;
        if deleted {
            self.journal.note(self.table, &key, None);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10").unwrap(), vec![0, 0xab, 0x10]);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn a_record_travels_as_json_and_comes_back_the_same() {
        let user = User {
            user_id: "ada".into(),
            user_email: Some("ada@example.com".into()),
            user_role: super::super::model::UserRole::InternalUser,
            user_alias: None,
            teams: vec!["t1".into()],
            max_budget: None,
            models: vec![],
            metadata: "{}".into(),
            password_hash: None,
            created_at: 1,
            updated_at: 2,
            limits: super::super::model::Limits {
                rpm_limit: Some(u64::MAX),
                ..Default::default()
            },
        };
        let stored = bincode::serialize(&user).unwrap();
        let row = USERS.encode(b"ada", Some(&stored)).unwrap();
        assert_eq!(row.id, "ada");
        assert_eq!(row.body.as_ref().unwrap()["user_id"], "ada");
        let (key, value) = USERS.decode(&row).unwrap();
        assert_eq!(key, b"ada");
        assert_eq!(value.unwrap(), stored);
        let index = KEY_HASHES.encode(&[1, 2], Some(&[0xff; 16])).unwrap();
        assert_eq!(index.id, "0102");
        assert_eq!(
            KEY_HASHES.decode(&index).unwrap().1.unwrap(),
            vec![0xff; 16]
        );
        let gone = KEYS.encode(&[7; 16], None).unwrap();
        assert_eq!(KEYS.decode(&gone).unwrap().1, None);
    }

    #[test]
    fn the_journal_keeps_the_last_write_of_each_row() {
        let journal = Journal::default();
        journal.note(&USERS, b"a", Some(b"x"));
        assert!(
            journal.close().unwrap().is_empty(),
            "not open: nothing noted"
        );
        journal.open();
        journal.note(&KEY_HASHES, b"\x01", Some(b"\x02"));
        journal.note(&KEY_HASHES, b"\x03", Some(b"\x04"));
        journal.note(&KEY_HASHES, b"\x01", None);
        let rows = journal.close().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].id.as_str(), rows[0].body.is_none()), ("01", true));
        assert_eq!(rows[1].id, "03");
    }
}
