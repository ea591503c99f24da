//! What a model takes and gives, read from the file without building it:
//! the contract `usan model check` prints, and the list of operators usan
//! cannot run. Types are written as onnxruntime names them
//! (`tensor(float)`, `seq(map(int64,tensor(float)))`), so a data scientist
//! sees what `InferenceSession.get_inputs()` showed them in Python.

use crate::proto::{self, DimensionValue, TypeValue};
use std::fmt;

/// A tensor's element type (ONNX `TensorProto.DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// Signed integers.
    Int8,
    /// Signed integers.
    Int16,
    /// Signed integers.
    Int32,
    /// Signed integers.
    Int64,
    /// Unsigned integers.
    Uint8,
    /// Unsigned integers.
    Uint16,
    /// Unsigned integers.
    Uint32,
    /// Unsigned integers.
    Uint64,
    /// Booleans.
    Bool,
    /// Text.
    String,
    /// 16-bit floats.
    Float16,
    /// 16-bit brain floats.
    Bfloat16,
    /// A type number this version of usan does not name.
    Other(i32),
}

impl ElemType {
    pub(crate) fn from_code(code: i32) -> Self {
        match code {
            1 => Self::Float,
            2 => Self::Uint8,
            3 => Self::Int8,
            4 => Self::Uint16,
            5 => Self::Int16,
            6 => Self::Int32,
            7 => Self::Int64,
            8 => Self::String,
            9 => Self::Bool,
            10 => Self::Float16,
            11 => Self::Double,
            12 => Self::Uint32,
            13 => Self::Uint64,
            16 => Self::Bfloat16,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Float => "float",
            Self::Double => "double",
            Self::Int8 => "int8",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Uint8 => "uint8",
            Self::Uint16 => "uint16",
            Self::Uint32 => "uint32",
            Self::Uint64 => "uint64",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Float16 => "float16",
            Self::Bfloat16 => "bfloat16",
            Self::Other(code) => return write!(f, "type{code}"),
        };
        f.write_str(name)
    }
}

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// Set at run time (the batch, usually); its name if the model gives one.
    Dynamic(Option<String>),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Dynamic(_) => f.write_str("?"),
        }
    }
}

/// The type of a model input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A tensor; `shape` is `None` when the model does not declare one.
    Tensor {
        /// Element type.
        elem: ElemType,
        /// Declared dimensions.
        shape: Option<Vec<Dim>>,
    },
    /// A sequence (a ZipMap's list of maps, one per row).
    Sequence(Box<ValueType>),
    /// A map from keys to values.
    Map {
        /// Key type.
        key: ElemType,
        /// Value type.
        value: Box<ValueType>,
    },
    /// A value that may be absent.
    Optional(Box<ValueType>),
    /// A sparse tensor.
    SparseTensor(ElemType),
    /// No type given.
    Unknown,
}

impl ValueType {
    fn from_proto(t: Option<&proto::TypeProto>) -> Self {
        let Some(value) = t.and_then(|t| t.value.as_ref()) else {
            return Self::Unknown;
        };
        match value {
            TypeValue::Tensor(tensor) => Self::Tensor {
                elem: ElemType::from_code(tensor.elem_type),
                shape: tensor.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(DimensionValue::Value(n)) if *n >= 0 => Dim::Fixed(*n as u64),
                            Some(DimensionValue::Param(name)) if !name.is_empty() => Dim::Dynamic(Some(name.clone())),
                            _ => Dim::Dynamic(None),
                        })
                        .collect()
                }),
            },
            TypeValue::Sequence(s) => Self::Sequence(Box::new(Self::from_proto(s.elem_type.as_deref()))),
            TypeValue::Optional(s) => Self::Optional(Box::new(Self::from_proto(s.elem_type.as_deref()))),
            TypeValue::Map(m) => Self::Map {
                key: ElemType::from_code(m.key_type),
                value: Box::new(Self::from_proto(m.value_type.as_deref())),
            },
            TypeValue::SparseTensor(t) => Self::SparseTensor(ElemType::from_code(t.elem_type)),
        }
    }

    /// The shape as `usan model check` prints it: `[?,4]`, `[]` for a
    /// scalar, `[?]` for a sequence (one element per row) and `?` when the
    /// model declares none.
    pub fn shape_text(&self) -> String {
        match self {
            Self::Tensor { shape: Some(dims), .. } => {
                format!("[{}]", dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            }
            Self::Sequence(_) => "[?]".to_string(),
            _ => "?".to_string(),
        }
    }

    /// The declared dimensions, when this is a tensor that declares them.
    pub fn dims(&self) -> Option<&[Dim]> {
        match self {
            Self::Tensor { shape: Some(dims), .. } => Some(dims),
            _ => None,
        }
    }

    /// The element type, when this is a tensor.
    pub fn elem(&self) -> Option<ElemType> {
        match self {
            Self::Tensor { elem, .. } => Some(*elem),
            _ => None,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tensor { elem, .. } => write!(f, "tensor({elem})"),
            Self::Sequence(inner) => write!(f, "seq({inner})"),
            Self::Map { key, value } => write!(f, "map({key},{value})"),
            Self::Optional(inner) => write!(f, "optional({inner})"),
            Self::SparseTensor(elem) => write!(f, "sparse_tensor({elem})"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// A named input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Its name in the graph.
    pub name: String,
    /// Its declared type.
    pub value: ValueType,
}

/// A model's inputs (initializers excluded) and outputs, in graph order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    /// What the caller feeds.
    pub inputs: Vec<Port>,
    /// What the model gives back.
    pub outputs: Vec<Port>,
}

impl Signature {
    pub(crate) fn of(graph: &proto::GraphProto) -> Self {
        let initialized: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let port =
            |v: &proto::ValueInfoProto| Port { name: v.name.clone(), value: ValueType::from_proto(v.r#type.as_ref()) };
        Self {
            inputs: graph.input.iter().filter(|v| !initialized.contains(v.name.as_str())).map(port).collect(),
            outputs: graph.output.iter().map(port).collect(),
        }
    }

    /// The `usan model check` lines: `input NAME TYPE SHAPE`, then
    /// `output NAME TYPE SHAPE`.
    pub fn lines(&self) -> Vec<String> {
        let line = |kind: &str, p: &Port| format!("{kind} {} {} {}", p.name, p.value, p.value.shape_text());
        self.inputs.iter().map(|p| line("input", p)).chain(self.outputs.iter().map(|p| line("output", p))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_shapes_are_written_as_onnxruntime_names_them() {
        let float_rows = ValueType::Tensor {
            elem: ElemType::Float,
            shape: Some(vec![Dim::Dynamic(Some("N".into())), Dim::Fixed(4)]),
        };
        let zipmap = ValueType::Sequence(Box::new(ValueType::Map {
            key: ElemType::Int64,
            value: Box::new(ValueType::Tensor { elem: ElemType::Float, shape: None }),
        }));
        let cases = [
            (float_rows, "tensor(float)", "[?,4]"),
            (zipmap, "seq(map(int64,tensor(float)))", "[?]"),
            (ValueType::Tensor { elem: ElemType::String, shape: Some(vec![]) }, "tensor(string)", "[]"),
            (ValueType::Tensor { elem: ElemType::Double, shape: None }, "tensor(double)", "?"),
            (ValueType::Unknown, "unknown", "?"),
        ];
        for (value, text, shape) in cases {
            assert_eq!(value.to_string(), text);
            assert_eq!(value.shape_text(), shape);
        }
    }
}
