//! Merge keys (`<<`) inside a customer entry: the mapping or list of mappings
//! a `<<` names, read as `Value::apply_merge` reads them (the entry applies
//! them: explicit keys win, then earlier merged mappings).

use super::*;

/// The value of a `<<` key in a customer: a mapping, or a list of them.
pub(super) struct MergeSeed<'c> {
    pub ctx: &'c Ctx,
    pub at: usize,
}

type Fields<'de> = Vec<(Key<'de>, Scalar<'de>)>;

any_seed!(MergeSeed => Vec<Fields<'de>>);

pub(super) const SCALAR_IN_MERGE: &str =
    "expected a mapping or list of mappings for merging, but found scalar";
const TAGGED_IN_MERGE: &str = "unexpected tagged value in merge";

impl<'de> Visitor<'de> for MergeSeed<'_> {
    type Value = Vec<Fields<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list of mappings")
    }
    scalars_fail!(SCALAR_IN_MERGE);
    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.fail(Problem::Merge(TAGGED_IN_MERGE)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![merge_fields(self.ctx, self.at, map)?])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut all = Vec::new();
        while let Some(fields) = seq.next_element_seed(MergeElementSeed {
            ctx: self.ctx,
            at: self.at + 1,
        })? {
            all.push(fields);
        }
        Ok(all)
    }
}

/// One element of a merge list: a mapping.
struct MergeElementSeed<'c> {
    ctx: &'c Ctx,
    at: usize,
}

any_seed!(MergeElementSeed => Fields<'de>);

const SCALAR_IN_ELEMENT: &str = "expected a mapping for merging, but found scalar";

impl<'de> Visitor<'de> for MergeElementSeed<'_> {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    scalars_fail!(SCALAR_IN_ELEMENT);
    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.fail(Problem::Merge(TAGGED_IN_MERGE)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.fail(Problem::Merge(
            "expected a mapping for merging, but found sequence",
        )))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        merge_fields(self.ctx, self.at, map)
    }
}

/// The keys and values of a mapping merged into a customer. A `<<` inside it is
/// kept as a key, as `Value::apply_merge` keeps it, and so reported as no field.
fn merge_fields<'de, A: MapAccess<'de>>(
    ctx: &Ctx,
    at: usize,
    mut map: A,
) -> Result<Fields<'de>, A::Error> {
    let mut fields = Vec::new();
    let mut seen = Seen::default();
    while let Some(key) = map
        .next_key_seed(ScalarSeed { ctx, at: at + 1 })?
        .map(Key::from)
    {
        seen.insert::<A::Error>(&key)?;
        let value = map.next_value_seed(ScalarSeed { ctx, at: at + 1 })?;
        fields.push((key, value));
    }
    Ok(fields)
}
