//! `LabelEncoder`: maps each value through a table of keys to values (text,
//! integers or floats), with a default for keys not in it. skl2onnx's
//! IsolationForest uses it to turn leaf indices into path lengths.

use super::{Attrs, Built, Kernel, OutShape, OutSpec, make, native, tensor_doubles};
use std::collections::HashMap;
use std::hash::Hash;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug)]
enum Keys {
    Ints(HashMap<i64, usize>),
    /// By bit pattern, with every NaN as one key (onnxruntime matches NaN to NaN).
    Floats(HashMap<u32, usize>),
    Strings(HashMap<String, usize>),
}

#[derive(Debug)]
enum Values {
    Ints(Vec<i64>, i64),
    Floats(Vec<f32>, f32),
    Strings(Vec<String>, String),
}

#[derive(Debug)]
struct LabelEncoder {
    keys: Keys,
    values: Values,
    /// Integer keys that fill most of a range, as a table indexed by key
    /// minus the first (no hashing: skl2onnx's leaf indices are such keys).
    dense: Option<DenseTable>,
}

/// The first key, and per key from it the position of its value.
type DenseTable = (i64, Vec<Option<usize>>);

/// Integer keys as a table when it is at most four times their number.
fn dense_table(map: &HashMap<i64, usize>) -> Option<DenseTable> {
    let (first, last) = (*map.keys().min()?, *map.keys().max()?);
    let span = usize::try_from(last.checked_sub(first)?).ok()?.checked_add(1)?;
    if span > map.len().saturating_mul(4).max(64) {
        return None;
    }
    let mut table = vec![None; span];
    for (&key, &position) in map {
        table[usize::try_from(key - first).ok()?] = Some(position);
    }
    Some((first, table))
}

fn float_key(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

fn index<K: Hash + Eq>(keys: impl IntoIterator<Item = K>) -> HashMap<K, usize> {
    let mut map = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        map.entry(k).or_insert(i);
    }
    map
}

pub(super) fn label_encoder(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let key_strings = a.strings("keys_strings")?;
    let keys = if !a.ints("keys_int64s").is_empty() {
        Keys::Ints(index(a.ints("keys_int64s").iter().copied()))
    } else if !a.floats("keys_floats").is_empty() {
        Keys::Floats(index(a.floats("keys_floats").iter().map(|&v| float_key(v))))
    } else if !key_strings.is_empty() {
        Keys::Strings(index(key_strings))
    } else if let Some(t) = a.tensor("keys_tensor") {
        if t.data_type == 8 {
            Keys::Strings(index(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned())))
        } else if t.data_type == 7 {
            Keys::Ints(index(tensor_doubles(t)?.into_iter().map(|v| v as i64)))
        } else {
            Keys::Floats(index(tensor_doubles(t)?.into_iter().map(|v| float_key(v as f32))))
        }
    } else {
        bail!("LabelEncoder has no keys");
    };
    let value_strings = a.strings("values_strings")?;
    let default_tensor = a.tensor("default_tensor");
    let values = if !a.ints("values_int64s").is_empty() {
        Values::Ints(a.ints("values_int64s").to_vec(), a.int("default_int64", -1))
    } else if !a.floats("values_floats").is_empty() {
        Values::Floats(a.floats("values_floats").to_vec(), a.float("default_float", -0.0))
    } else if !value_strings.is_empty() {
        Values::Strings(value_strings, a.string("default_string", "_Unused")?)
    } else if let Some(t) = a.tensor("values_tensor") {
        let default = default_tensor.map(tensor_doubles).transpose()?.and_then(|d| d.first().copied());
        if t.data_type == 8 {
            let default = default_tensor
                .and_then(|d| d.string_data.first())
                .map_or_else(|| "_Unused".to_string(), |s| String::from_utf8_lossy(s).into_owned());
            Values::Strings(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect(), default)
        } else if t.data_type == 7 {
            Values::Ints(tensor_doubles(t)?.into_iter().map(|v| v as i64).collect(), default.map_or(-1, |d| d as i64))
        } else {
            Values::Floats(
                tensor_doubles(t)?.into_iter().map(|v| v as f32).collect(),
                default.map_or(-0.0, |d| d as f32),
            )
        }
    } else {
        bail!("LabelEncoder has no values");
    };
    let (n_keys, n_values) = (
        match &keys {
            Keys::Ints(m) => m.len(),
            Keys::Floats(m) => m.len(),
            Keys::Strings(m) => m.len(),
        },
        match &values {
            Values::Ints(v, _) => v.len(),
            Values::Floats(v, _) => v.len(),
            Values::Strings(v, _) => v.len(),
        },
    );
    ensure!(n_keys <= n_values, "LabelEncoder has {n_keys} distinct keys but {n_values} values");
    let dense = match &keys {
        Keys::Ints(map) => dense_table(map),
        _ => None,
    };
    native(LabelEncoder { keys, values, dense })
}

impl Kernel for LabelEncoder {
    fn name(&self) -> &'static str {
        "LabelEncoder"
    }

    fn outputs(&self) -> Vec<OutSpec> {
        let datum = match self.values {
            Values::Ints(..) => i64::datum_type(),
            Values::Floats(..) => f32::datum_type(),
            Values::Strings(..) => String::datum_type(),
        };
        vec![OutSpec { datum: Some(datum), shape: OutShape::LikeInput }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let positions: Vec<Option<usize>> = match &self.keys {
            Keys::Strings(map) => {
                let text = input.try_as_plain_ram()?.as_slice::<String>()?.to_vec();
                text.iter().map(|s| map.get(s).copied()).collect()
            }
            Keys::Ints(map) => {
                let v = input.cast_to::<i64>()?;
                let keys = v.try_as_plain_ram()?.as_slice::<i64>()?.iter();
                match &self.dense {
                    Some((first, table)) => keys
                        .map(|k| {
                            let at = usize::try_from(k.checked_sub(*first)?).ok()?;
                            table.get(at).copied().flatten()
                        })
                        .collect(),
                    None => keys.map(|k| map.get(k).copied()).collect(),
                }
            }
            Keys::Floats(map) => {
                let v = input.cast_to::<f32>()?;
                v.try_as_plain_ram()?.as_slice::<f32>()?.iter().map(|&k| map.get(&float_key(k)).copied()).collect()
            }
        };
        let shape = input.shape();
        let out = match &self.values {
            Values::Ints(v, d) => {
                make(shape, positions.iter().map(|p| p.and_then(|i| v.get(i).copied()).unwrap_or(*d)).collect())?
            }
            Values::Floats(v, d) => {
                make(shape, positions.iter().map(|p| p.and_then(|i| v.get(i).copied()).unwrap_or(*d)).collect())?
            }
            Values::Strings(v, d) => make(
                shape,
                positions.iter().map(|p| p.and_then(|i| v.get(i).cloned()).unwrap_or_else(|| d.clone())).collect(),
            )?,
        };
        Ok(tvec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_become_a_table_only_when_they_fill_their_range() {
        let cases: Vec<(&[i64], Option<DenseTable>)> = vec![
            (&[3, 5, 7], Some((3, vec![Some(0), None, Some(1), None, Some(2)]))),
            (&[-2, -1], Some((-2, vec![Some(0), Some(1)]))),
            (&[0, 1_000_000], None),
            (&[i64::MIN, i64::MAX], None),
            (&[], None),
        ];
        for (keys, expected) in cases {
            assert_eq!(dense_table(&index(keys.iter().copied())), expected, "{keys:?}");
        }
    }
}
