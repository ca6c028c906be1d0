//! The whole-state copy's PostgreSQL side: reading every table (streamed),
//! writing a chunk of rows per statement into one transaction.

use super::*;
use crate::store::copy::{Kind, Sink, Table, Value};
use ::postgres::Transaction;

struct TxSink<'a, 'c> {
    tx: &'a mut Transaction<'c>,
}

fn column<T: Clone>(
    rows: &[Vec<Value>],
    i: usize,
    pick: impl Fn(&Value) -> Option<T>,
) -> Vec<Option<T>> {
    rows.iter().map(|r| pick(&r[i])).collect()
}

impl Sink for TxSink<'_, '_> {
    fn write(&mut self, table: &Table, rows: &[Vec<Value>]) -> Result<()> {
        let mut arrays: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(table.columns.len());
        let mut casts = Vec::with_capacity(table.columns.len());
        for (i, (_, kind)) in table.columns.iter().enumerate() {
            let (array, cast): (Box<dyn ToSql + Sync>, &str) = match kind {
                Kind::Int => (
                    Box::new(column(rows, i, |v| match v {
                        Value::Int(n) => Some(*n),
                        _ => None,
                    })),
                    "int8[]",
                ),
                Kind::Bool => (
                    Box::new(column(rows, i, |v| match v {
                        Value::Bool(b) => Some(*b),
                        Value::Int(n) => Some(*n != 0),
                        _ => None,
                    })),
                    "bool[]",
                ),
                Kind::Text => (
                    Box::new(column(rows, i, |v| match v {
                        Value::Text(t) => Some(t.clone()),
                        _ => None,
                    })),
                    "text[]",
                ),
                Kind::Bytes => (
                    Box::new(column(rows, i, |v| match v {
                        Value::Bytes(b) => Some(b.clone()),
                        _ => None,
                    })),
                    "bytea[]",
                ),
            };
            arrays.push(array);
            casts.push(format!("${}::{cast}", i + 1));
        }
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            table.name,
            table.column_list(),
            casts.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.as_ref()).collect();
        self.tx.execute(&sql, &params).step("copying rows in")?;
        Ok(())
    }
}

impl Db {
    pub(in crate::store) fn count_rows(&self, table: &str) -> Result<u64> {
        let mut c = self.conn();
        let n: i64 = c
            .client
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .step("counting rows")?
            .get(0);
        Ok(count(n))
    }

    pub(in crate::store) fn read_table(
        &self,
        table: &Table,
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        use ::postgres::fallible_iterator::FallibleIterator;
        let step = "copying rows out";
        let mut c = self.conn();
        let sql = format!("SELECT {} FROM {}", table.column_list(), table.name);
        let mut rows = c
            .client
            .query_raw(sql.as_str(), std::iter::empty::<&(dyn ToSql + Sync)>())
            .step(step)?;
        while let Some(r) = rows.next().step(step)? {
            let mut row = Vec::with_capacity(table.columns.len());
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                row.push(
                    match kind {
                        Kind::Int => r.get::<_, Option<i64>>(i).map(Value::Int),
                        Kind::Bool => r.get::<_, Option<bool>>(i).map(Value::Bool),
                        Kind::Text => r.get::<_, Option<String>>(i).map(Value::Text),
                        Kind::Bytes => r.get::<_, Option<Vec<u8>>>(i).map(Value::Bytes),
                    }
                    .unwrap_or(Value::Null),
                );
            }
            each(row)?;
        }
        Ok(())
    }

    pub(in crate::store) fn write_tables(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Sink) -> Result<()>,
    ) -> Result<()> {
        let step = "copying rows in";
        let client = self.client();
        let mut tx = client.transaction().step(step)?;
        f(&mut TxSink { tx: &mut tx })?;
        // Identity columns continue after the copied ids.
        for table in crate::store::copy::TABLES {
            if let Some(id) = table.identity {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', '{id}'), COALESCE((SELECT MAX({id}) FROM {0}), 0) + 1, false)",
                        table.name
                    ),
                    &[],
                )
                .step(step)?;
            }
        }
        tx.commit().step(step)
    }
}
