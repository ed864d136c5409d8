//! The typed value a Redis read returns (rule ABI v2): nil, an integer, a bulk string or
//! an array, with accessors for what rules do with them (text, numbers, field-value
//! pairs). The wire format is `abi::v2`'s.

use std::fmt;

/// One Redis reply.
///
/// # Examples
///
/// ```
/// use wasmrule_guest::Value;
/// let v = Value::from("21.5");
/// assert_eq!(v.as_str(), Some("21.5"));
/// assert_eq!(v.as_f64(), Some(21.5));
/// assert!(Value::Nil.is_nil());
/// assert_eq!(Value::Int(3).as_i64(), Some(3));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Value {
    /// A missing key, field or member.
    #[default]
    Nil,
    /// An integer reply (`EXISTS`, `HLEN`, `TTL`, ...).
    Int(i64),
    /// A bulk or status string, binary-safe (`GET`, `HGET`, `TYPE`, scores).
    Bulk(Vec<u8>),
    /// An array (`MGET`, `LRANGE`, `HGETALL` as field, value, field, value, ...).
    Array(Vec<Value>),
}

impl Value {
    /// True for [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The bytes of a bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a bulk string, by value.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// A bulk string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer reply, or a bulk string holding a decimal integer (`GET` of a
    /// counter).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bulk(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// A number: an integer reply, or a bulk string Rust parses as `f64` (`21.5`,
    /// `-3e2`, scores, `inf`). `NaN` text is not a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Bulk(_) => self
                .as_str()?
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| !x.is_nan()),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The elements of an array, by value.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An array of alternating fields and values (`HGETALL`, a stream entry's fields)
    /// as pairs; a trailing odd element is left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use wasmrule_guest::Value;
    /// let v = Value::Array(vec!["f".into(), "1".into(), "g".into(), "2".into()]);
    /// let pairs: Vec<_> = v.pairs().collect();
    /// assert_eq!(pairs[1].0.as_str(), Some("g"));
    /// ```
    pub fn pairs(&self) -> impl Iterator<Item = (&Value, &Value)> {
        self.as_array()
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| (&c[0], &c[1]))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bulk(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bulk(b.to_vec())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// As `redis-cli` shows replies on one line: `(nil)`, `(integer) 3`, `"text"`,
/// `[a, b]`.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("(nil)"),
            Value::Int(i) => write!(f, "(integer) {i}"),
            Value::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Array(a) => f.debug_list().entries(a).finish(),
        }
    }
}
