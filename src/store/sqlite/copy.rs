//! The whole-state copy's SQLite side: reading every table, writing into one
//! transaction.

use super::*;
use crate::store::copy::{Kind, Sink, Table, Value};

struct TxSink<'a, 'c> {
    tx: &'a rusqlite::Transaction<'c>,
}

impl Sink for TxSink<'_, '_> {
    fn write(&mut self, table: &Table, rows: &[Vec<Value>]) -> Result<()> {
        let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
        let mut stmt = self
            .tx
            .prepare_cached(&format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                table.column_list(),
                marks.join(", ")
            ))
            .step("copying rows in")?;
        for row in rows {
            let values = row.iter().map(|v| match v {
                Value::Null => rusqlite::types::Value::Null,
                Value::Int(n) => rusqlite::types::Value::Integer(*n),
                Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
                Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
                Value::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
            });
            stmt.execute(rusqlite::params_from_iter(values))
                .step("copying rows in")?;
        }
        Ok(())
    }
}

impl Db {
    pub(in crate::store) fn describe(&self) -> String {
        match self.conn.path() {
            Some(path) if !path.is_empty() => path.to_owned(),
            _ => "an in-memory state".to_owned(),
        }
    }

    pub(in crate::store) fn count_rows(&self, table: &str) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .step("counting rows")?;
        Ok(n as u64)
    }

    pub(in crate::store) fn read_table(
        &self,
        table: &Table,
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let step = "copying rows out";
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM {}",
                table.column_list(),
                table.name
            ))
            .step(step)?;
        let mut rows = stmt.query([]).step(step)?;
        while let Some(r) = rows.next().step(step)? {
            let mut row = Vec::with_capacity(table.columns.len());
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                row.push(match (kind, r.get_ref(i).step(step)?) {
                    (_, rusqlite::types::ValueRef::Null) => Value::Null,
                    (Kind::Bool, v) => Value::Bool(v.as_i64().step(step)? != 0),
                    (Kind::Int, v) => Value::Int(v.as_i64().step(step)?),
                    (Kind::Text, v) => Value::Text(v.as_str().step(step)?.to_owned()),
                    (Kind::Bytes, v) => Value::Bytes(v.as_blob().step(step)?.to_owned()),
                });
            }
            each(row)?;
        }
        Ok(())
    }

    pub(in crate::store) fn write_tables(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sink) -> Result<()>,
    ) -> Result<()> {
        let tx = self.conn.transaction().step("copying rows in")?;
        f(&mut TxSink { tx: &tx })?;
        tx.commit().step("copying rows in")
    }
}
