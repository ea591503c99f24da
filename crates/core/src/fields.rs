//! The field names of a settings type, read from its `Deserialize`
//! implementation: what the manual's configuration reference is checked
//! against, so a setting cannot be added, renamed or removed without the
//! manual following.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The fields a struct deserialized with serde's derive accepts, in
/// declaration order (serde's own list); empty for anything else.
#[must_use]
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut found = None;
    let _ = T::deserialize(Capture { found: &mut found });
    found.unwrap_or(&[])
}

/// A deserializer that reads nothing and remembers the field list a
/// struct asks for.
struct Capture<'a> {
    found: &'a mut Option<&'static [&'static str]>,
}

/// Why a capture always ends in an error: the value is never built.
#[derive(Debug)]
struct Captured;

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_message: T) -> Self {
        Captured
    }
}

impl<'de> Deserializer<'de> for Capture<'_> {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
        Err(Captured)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Captured> {
        *self.found = Some(fields);
        Err(Captured)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only its field names are read
    struct Settings {
        window: usize,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        nested: Option<Box<Settings>>,
    }

    #[derive(serde::Deserialize)]
    #[serde(tag = "type")]
    #[allow(dead_code)] // only its shape matters
    enum Tagged {
        A(Settings),
    }

    #[test]
    fn a_settings_struct_gives_its_fields_and_other_types_none() {
        assert_eq!(fields_of::<Settings>(), ["window", "type", "nested"]);
        assert!(fields_of::<f64>().is_empty());
        assert!(fields_of::<Tagged>().is_empty(), "a tagged enum has no one list");
    }
}
