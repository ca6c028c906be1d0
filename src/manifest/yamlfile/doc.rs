//! A YAML manifest read straight into the few shapes a manifest can take, without
//! building a `serde_yaml::Value` tree: the strings borrow from the text where the
//! parser allows it, and everything that cannot be a customer field is skipped with
//! its depth counted. Merge keys (`<<`) are applied inside customer entries, as
//! `Value::apply_merge` would: explicit keys win, then earlier merged mappings.

use super::super::yamldepth::MAX_DEPTH;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

/// The document, as far as a manifest cares.
#[derive(Debug, PartialEq)]
pub enum Doc<'de> {
    Null,
    List(Vec<Entry<'de>>),
    Map(TopMap<'de>),
    /// A scalar or a tagged value: not a manifest.
    Other,
}

/// A top-level mapping: `businessUnitSlug`, `customers`, and the names of any other keys.
#[derive(Debug, PartialEq, Default)]
pub struct TopMap<'de> {
    pub unit: Scalar<'de>,
    pub customers: Customers<'de>,
    /// Keys other than the two above and `x-…`, in order.
    pub unknown: Vec<String>,
}

#[derive(Debug, PartialEq, Default)]
pub enum Customers<'de> {
    /// Absent or null.
    #[default]
    Missing,
    List(Vec<Entry<'de>>),
    /// Present but not a list.
    Other,
}

/// One element of the customers list.
#[derive(Debug, PartialEq)]
pub enum Entry<'de> {
    /// Its keys and values in document order, merged keys after explicit ones.
    Fields(Vec<(Key<'de>, Scalar<'de>)>),
    NotMapping,
}

#[derive(Debug, PartialEq, Eq, Hash, Clone)]
pub enum Key<'de> {
    Str(Cow<'de, str>),
    /// A key that is not a string, described for the error message.
    Other(String),
}

/// How a key that is a collection or a tagged value is named. Such keys are never
/// compared with each other (two different ones would look the same).
const COLLECTION_KEY: &str = "a collection or tagged value";

impl<'de> From<Scalar<'de>> for Key<'de> {
    fn from(key: Scalar<'de>) -> Self {
        match key {
            Scalar::Str(name) => Key::Str(name),
            Scalar::Null => Key::Other("Null".into()),
            Scalar::Bool(b) => Key::Other(format!("Bool({b})")),
            Scalar::Number(n) => Key::Other(format!("Number({n})")),
            Scalar::Other => Key::Other(COLLECTION_KEY.into()),
        }
    }
}

/// A value where a customer field goes, classified as YAML's core schema reads it.
#[derive(Debug, PartialEq, Default, Clone)]
pub enum Scalar<'de> {
    #[default]
    Null,
    Str(Cow<'de, str>),
    Bool(bool),
    /// An unquoted number, as written back for the error message.
    Number(String),
    /// A collection or a tagged value.
    Other,
}

/// Why a document could not be read.
#[derive(Debug)]
pub enum DocError {
    Syntax(serde_yaml::Error),
    /// Nested deeper than [`MAX_DEPTH`], with the line where that was found.
    TooDeep(Option<u32>),
    /// A merge key whose value is not a mapping or a list of mappings.
    Merge(&'static str, Option<u32>),
    /// A merge key at the top level, where the manifest's keys are fixed.
    TopLevelMerge,
}

/// What a visitor noticed that a serde error cannot carry.
#[derive(Clone, Copy)]
enum Problem {
    TooDeep,
    Merge(&'static str),
    TopLevelMerge,
}

#[derive(Default)]
struct Ctx {
    problem: Cell<Option<Problem>>,
}

impl Ctx {
    fn fail<E: de::Error>(&self, problem: Problem) -> E {
        self.problem.set(Some(problem));
        E::custom("manifest shape")
    }
}

pub fn read(text: &str) -> Result<Doc<'_>, DocError> {
    let ctx = Ctx::default();
    let de = serde_yaml::Deserializer::from_str(text);
    DocSeed { ctx: &ctx }.deserialize(de).map_err(|err| {
        let line = err.location().map(|l| l.line() as u32);
        match ctx.problem.get() {
            None => DocError::Syntax(err),
            Some(Problem::TooDeep) => DocError::TooDeep(line),
            Some(Problem::Merge(why)) => DocError::Merge(why, line),
            Some(Problem::TopLevelMerge) => DocError::TopLevelMerge,
        }
    })
}

macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// A seed whose value is whatever its visitor makes of the next value.
macro_rules! any_seed {
    ($seed:ident => $value:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed<'_> {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// Every scalar (null included) is `$problem`.
macro_rules! scalars_fail {
    ($problem:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            self.visit_unit()
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.ctx.fail(Problem::Merge($problem)))
        }
    };
}

// After the macros, which it uses.
mod merge;
use merge::MergeSeed;

/// Skips one value, failing once it nests deeper than [`MAX_DEPTH`].
#[derive(Clone, Copy)]
struct Skip<'c> {
    ctx: &'c Ctx,
    at: usize,
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.at > MAX_DEPTH {
            return Err(self.ctx.fail(Problem::TooDeep));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    scalars_are!(());
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = Skip {
            at: self.at + 1,
            ..self
        };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = Skip {
            at: self.at + 1,
            ..self
        };
        // Keys are read as scalars only to find duplicates, as YAML requires anywhere.
        let mut seen = Seen::default();
        let key = ScalarSeed {
            ctx: self.ctx,
            at: inner.at,
        };
        while let Some(key) = map.next_key_seed(key)?.map(Key::from) {
            seen.insert::<A::Error>(&key)?;
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

struct DocSeed<'c> {
    ctx: &'c Ctx,
}

any_seed!(DocSeed => Doc<'de>);

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = Doc<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest")
    }
    scalars_are!(Doc::Other);
    fn visit_unit<E: de::Error>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Doc<'de>, A::Error> {
        entries(self.ctx, 1, seq).map(Doc::List)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut top = TopMap::default();
        let mut seen = Seen::default();
        while let Some(key) = map
            .next_key_seed(ScalarSeed {
                ctx: self.ctx,
                at: 1,
            })?
            .map(Key::from)
        {
            seen.insert::<A::Error>(&key)?;
            match &key {
                Key::Str(name) if name == "businessUnitSlug" => {
                    top.unit = map.next_value_seed(ScalarSeed {
                        ctx: self.ctx,
                        at: 1,
                    })?;
                }
                Key::Str(name) if name == "customers" => {
                    top.customers = map.next_value_seed(CustomersSeed { ctx: self.ctx })?;
                }
                Key::Str(name) if name == "<<" => {
                    return Err(self.ctx.fail(Problem::TopLevelMerge));
                }
                key => {
                    if let Key::Str(name) = key {
                        if !name.starts_with("x-") {
                            top.unknown.push(name.to_string());
                        }
                    } else if let Key::Other(name) = key {
                        top.unknown.push(name.clone());
                    }
                    map.next_value_seed(Skip {
                        ctx: self.ctx,
                        at: 1,
                    })?;
                }
            }
        }
        Ok(Doc::Map(top))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Doc<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: 0,
        }
        .visit_enum(data)?;
        Ok(Doc::Other)
    }
}

fn entries<'de, A: SeqAccess<'de>>(
    ctx: &Ctx,
    at: usize,
    mut seq: A,
) -> Result<Vec<Entry<'de>>, A::Error> {
    let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
    while let Some(entry) = seq.next_element_seed(EntrySeed { ctx, at: at + 1 })? {
        entries.push(entry);
    }
    Ok(entries)
}

struct CustomersSeed<'c> {
    ctx: &'c Ctx,
}

any_seed!(CustomersSeed => Customers<'de>);

impl<'de> Visitor<'de> for CustomersSeed<'_> {
    type Value = Customers<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of customers")
    }
    scalars_are!(Customers::Other);
    fn visit_unit<E: de::Error>(self) -> Result<Customers<'de>, E> {
        Ok(Customers::Missing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Customers<'de>, A::Error> {
        entries(self.ctx, 1, seq).map(Customers::List)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Customers<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: 1,
        }
        .visit_map(map)?;
        Ok(Customers::Other)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Customers<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: 1,
        }
        .visit_enum(data)?;
        Ok(Customers::Other)
    }
}

struct EntrySeed<'c> {
    ctx: &'c Ctx,
    at: usize,
}

any_seed!(EntrySeed => Entry<'de>);

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = Entry<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a customer")
    }
    scalars_are!(Entry::NotMapping);
    fn visit_unit<E: de::Error>(self) -> Result<Entry<'de>, E> {
        Ok(Entry::NotMapping)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entry<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: self.at,
        }
        .visit_seq(seq)?;
        Ok(Entry::NotMapping)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry<'de>, A::Error> {
        let (ctx, at) = (self.ctx, self.at);
        let mut fields = Vec::with_capacity(8);
        let mut merged: Vec<Vec<(Key<'de>, Scalar<'de>)>> = Vec::new();
        let mut seen = Seen::default();
        while let Some(key) = map
            .next_key_seed(ScalarSeed { ctx, at: at + 1 })?
            .map(Key::from)
        {
            seen.insert::<A::Error>(&key)?;
            if matches!(&key, Key::Str(name) if name == "<<") {
                merged = map.next_value_seed(MergeSeed { ctx, at: at + 1 })?;
            } else {
                let value = map.next_value_seed(ScalarSeed { ctx, at: at + 1 })?;
                fields.push((key, value));
            }
        }
        for (key, value) in merged.into_iter().flatten() {
            if seen.insert_merged(&key) {
                fields.push((key, value));
            }
        }
        Ok(Entry::Fields(fields))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Entry<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: self.at,
        }
        .visit_enum(data)?;
        Ok(Entry::NotMapping)
    }
}

/// The keys of one mapping so far: a duplicate is an error, as YAML requires.
/// A customer has a handful of keys, so they are compared in a list until there
/// are many (a hostile entry), then hashed.
#[derive(Default)]
struct Seen<'k> {
    few: Vec<Key<'k>>,
    many: HashSet<Key<'k>>,
}

impl<'k> Seen<'k> {
    const FEW: usize = 16;

    fn insert<E: de::Error>(&mut self, key: &Key<'k>) -> Result<(), E> {
        if self.insert_merged(key) {
            return Ok(());
        }
        Err(E::custom(match key {
            Key::Str(name) => format!("duplicate entry with key {name:?}"),
            Key::Other(name) => format!("duplicate entry with key {name}"),
        }))
    }

    /// Whether `key` is new here, remembering it (a merged key that is not new is dropped).
    fn insert_merged(&mut self, key: &Key<'k>) -> bool {
        if matches!(key, Key::Other(name) if name == COLLECTION_KEY) {
            return true;
        }
        if self.many.is_empty() {
            if self.few.contains(key) {
                return false;
            }
            if self.few.len() < Self::FEW {
                self.few.push(key.clone());
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key.clone())
    }
}

#[derive(Clone, Copy)]
struct ScalarSeed<'c> {
    ctx: &'c Ctx,
    at: usize,
}

any_seed!(ScalarSeed => Scalar<'de>);

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(serde_yaml::Number::from(v).to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: self.at,
        }
        .visit_seq(seq)?;
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: self.at,
        }
        .visit_map(map)?;
        Ok(Scalar::Other)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Scalar<'de>, A::Error> {
        Skip {
            ctx: self.ctx,
            at: self.at,
        }
        .visit_enum(data)?;
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
#[path = "doc_tests.rs"]
mod tests;
