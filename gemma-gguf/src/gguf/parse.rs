//! Parsing one GGUF buffer: header, key/value pairs, tensor infos, data layout.
//! Every count and length is checked against the bytes that remain before anything is
//! allocated; all arithmetic on file-supplied numbers is checked.

use super::cursor::Cursor;
use super::error::{GgufError, Result};
use super::limits::{MAX_ARRAY_LEN, MAX_DIMS, MIN_KV_LEN, MIN_TENSOR_INFO_LEN};
use super::reader::TensorInfo;
use super::types::{GgmlType, GgufValueType};
use super::validate;
use super::value::{GgufArray, GgufValue};
use super::{pad_to, GGUF_MAGIC, KEY_ALIGNMENT};
use std::collections::HashMap;

/// Everything in one file's header.
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, GgufValue)>,
    pub key_index: HashMap<String, usize>,
    /// Tensor infos with `shard` 0.
    pub tensors: Vec<TensorInfo>,
    /// Start of the data section, from the start of the buffer.
    pub data_offset: u64,
}

/// Parses and validates the header of `buf`, which holds the whole file.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor::new(buf);
    let (version, n_tensors, n_kv) = read_header(&mut c)?;
    let (metadata, key_index) = read_kvs(&mut c, n_kv)?;
    let alignment = validate::alignment_from_value(key_index.get(KEY_ALIGNMENT).map(|&i| &metadata[i].1))?;
    let tensors = read_tensor_infos(&mut c, n_tensors)?;

    // The data section starts at the next multiple of the alignment, but ggml only
    // requires (and seeks to) that padding when there are tensors.
    let file_len = buf.len() as u64;
    let data_offset = if n_tensors > 0 { pad_to(c.offset(), alignment).unwrap_or(u64::MAX) } else { c.offset() };
    if data_offset > file_len {
        return Err(GgufError::DataSectionOutOfBounds { data_offset, file_len });
    }
    check_layout(&tensors, alignment, file_len - data_offset)?;
    Ok(Parsed { version, alignment, metadata, key_index, tensors, data_offset })
}

fn read_header(c: &mut Cursor) -> Result<(u32, u64, u64)> {
    let magic = c.array::<4>(&|| "the magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "the version".into())?;
    validate::check_version(version)?;
    let n_tensors = c.u64(&|| "n_tensors".into())?;
    let n_kv = c.u64(&|| "n_kv".into())?;

    // Each entry takes at least its minimal encoding, so both counts are bounded by the
    // bytes left. This also keeps them below i64::MAX, as ggml requires.
    let too_large =
        |field, count, bytes_left| GgufError::CountTooLarge { field, count, offset: c.offset(), bytes_left };
    let left = c.remaining();
    let kv_bytes = n_kv.checked_mul(MIN_KV_LEN).filter(|&b| b <= left).ok_or_else(|| too_large("n_kv", n_kv, left))?;
    let left = left - kv_bytes;
    n_tensors
        .checked_mul(MIN_TENSOR_INFO_LEN)
        .filter(|&b| b <= left)
        .ok_or_else(|| too_large("n_tensors", n_tensors, left))?;
    Ok((version, n_tensors, n_kv))
}

/// Counts are already bounded by the bytes left, but one decoded entry is larger than its
/// smallest encoding (a `String` is 24 bytes, its encoding 8), so vectors start at most
/// this long and grow only as entries actually parse.
const PREALLOC_CAP: u64 = 4096;

fn prealloc(n: u64) -> usize {
    n.min(PREALLOC_CAP) as usize
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

fn read_kvs(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let mut metadata = Vec::with_capacity(prealloc(n_kv));
    let mut index = HashMap::with_capacity(prealloc(n_kv));
    for i in 0..n_kv {
        let offset = c.offset();
        let key = c.string(&|| format!("key #{i}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index: i, offset });
        }
        if index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        let value = read_value(c, &key)?;
        index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

fn read_value_type(c: &mut Cursor, key: &str) -> Result<GgufValueType> {
    let offset = c.offset();
    let type_id = c.u32(&|| format!("the value type of '{key}'"))?;
    GgufValueType::from_u32(type_id).ok_or_else(|| GgufError::UnknownValueType { key: key.to_owned(), type_id, offset })
}

fn read_value(c: &mut Cursor, key: &str) -> Result<GgufValue> {
    let value_type = read_value_type(c, key)?;
    let field = || format!("the value of '{key}'");
    Ok(match value_type {
        GgufValueType::U8 => GgufValue::U8(c.u8(&field)?),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(c.array(&field)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(c.array(&field)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(c.array(&field)?)),
        GgufValueType::U32 => GgufValue::U32(c.u32(&field)?),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(c.array(&field)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(c.array(&field)?)),
        GgufValueType::Bool => GgufValue::Bool(read_bool(c, key, &field)?),
        GgufValueType::String => GgufValue::String(c.string(&field)?),
        GgufValueType::Array => GgufValue::Array(read_array(c, key)?),
        GgufValueType::U64 => GgufValue::U64(c.u64(&field)?),
        GgufValueType::I64 => GgufValue::I64(c.i64(&field)?),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(c.array(&field)?)),
    })
}

/// Bools are strict: ggml writes 0 or 1, anything else is corruption.
fn read_bool(c: &mut Cursor, key: &str, field: &dyn Fn() -> String) -> Result<bool> {
    let offset = c.offset();
    match c.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool { key: key.to_owned(), offset, byte }),
    }
}

fn read_array(c: &mut Cursor, key: &str) -> Result<GgufArray> {
    let elem = read_value_type(c, key)?;
    if elem == GgufValueType::Array {
        return Err(GgufError::NestedArray { key: key.to_owned() });
    }
    let offset = c.offset();
    let len = c.u64(&|| format!("the length of array '{key}'"))?;
    // Each element takes at least `min_size` bytes, so `len` is bounded by the bytes left
    // before the vector is allocated.
    let limit = MAX_ARRAY_LEN.min(c.remaining() / elem.min_size());
    if len > limit {
        return Err(GgufError::ArrayTooLong { key: key.to_owned(), offset, len, limit });
    }
    read_elements(c, key, elem, len as usize)
}

fn read_elements(c: &mut Cursor, key: &str, elem: GgufValueType, n: usize) -> Result<GgufArray> {
    let field = || format!("the elements of array '{key}'");
    Ok(match elem {
        GgufValueType::U8 => GgufArray::U8(fixed(c, n, &field, u8::from_le_bytes)?),
        GgufValueType::I8 => GgufArray::I8(fixed(c, n, &field, i8::from_le_bytes)?),
        GgufValueType::U16 => GgufArray::U16(fixed(c, n, &field, u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(fixed(c, n, &field, i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(fixed(c, n, &field, u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(fixed(c, n, &field, i32::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(fixed(c, n, &field, f32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(fixed(c, n, &field, u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(fixed(c, n, &field, i64::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(fixed(c, n, &field, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            let mut v = Vec::with_capacity(prealloc(n as u64));
            for _ in 0..n {
                v.push(read_bool(c, key, &field)?);
            }
            GgufArray::Bool(v)
        }
        GgufValueType::String => {
            let mut v = Vec::with_capacity(prealloc(n as u64));
            for i in 0..n {
                v.push(c.string(&|| format!("element {i} of array '{key}'"))?);
            }
            GgufArray::String(v)
        }
        GgufValueType::Array => return Err(GgufError::NestedArray { key: key.to_owned() }),
    })
}

/// `n` fixed-size little-endian numbers; the caller has bounded `n` by the bytes left.
fn fixed<T, const N: usize>(
    c: &mut Cursor,
    n: usize,
    field: &dyn Fn() -> String,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    let bytes = c.take((n as u64).saturating_mul(N as u64), field)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut a = [0u8; N];
            a.copy_from_slice(chunk);
            decode(a)
        })
        .collect())
}

fn read_tensor_infos(c: &mut Cursor, n_tensors: u64) -> Result<Vec<TensorInfo>> {
    let mut tensors = Vec::with_capacity(prealloc(n_tensors));
    let mut seen = HashMap::with_capacity(prealloc(n_tensors));
    for index in 0..n_tensors {
        let info = read_tensor_info(c, index)?;
        if seen.insert(info.name.clone(), index).is_some() {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensors.push(info);
    }
    Ok(tensors)
}

fn read_tensor_info(c: &mut Cursor, index: u64) -> Result<TensorInfo> {
    let offset = c.offset();
    let name = c.string(&|| format!("the name of tensor #{index}"))?;
    validate::check_tensor_name(&name, index, offset)?;
    let n_dims = c.u32(&|| format!("n_dims of tensor '{name}'"))?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims { tensor: name, n_dims: n_dims.into() });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for dim in 0..n_dims as usize {
        let ne = c.i64(&|| format!("ne[{dim}] of tensor '{name}'"))?;
        let ne = u64::try_from(ne).map_err(|_| GgufError::NegativeDim { tensor: name.clone(), dim, ne })?;
        dims.push(ne);
    }
    let type_id = c.u32(&|| format!("the type of tensor '{name}'"))?;
    let ggml_type =
        GgmlType::from_u32(type_id).map_err(|source| GgufError::UnsupportedType { tensor: name.clone(), source })?;
    let n_bytes = validate::tensor_n_bytes(&name, &dims, ggml_type)?;
    let data_offset = c.u64(&|| format!("the data offset of tensor '{name}'"))?;
    Ok(TensorInfo { name, dims, ggml_type, offset: data_offset, n_bytes, shard: 0 })
}

/// Tensors lie inside the data section, each at the previous tensor's end rounded up to
/// the alignment (the first at 0), as `gguf_init_from_reader` requires.
fn check_layout(tensors: &[TensorInfo], alignment: u64, data_len: u64) -> Result<()> {
    let mut expected = 0u64;
    for t in tensors {
        let end = t.offset.checked_add(t.n_bytes).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_len,
            });
        };
        let (tensor, offset) = (t.name.clone(), t.offset);
        if offset & (alignment - 1) != 0 {
            return Err(GgufError::TensorMisaligned { tensor, offset, alignment });
        }
        if offset < expected {
            return Err(GgufError::TensorOverlap { tensor, offset, expected });
        }
        if offset > expected {
            return Err(GgufError::TensorGap { tensor, offset, expected });
        }
        // end ≤ data_len ≤ isize::MAX and alignment ≤ 2^16: no overflow.
        expected = pad_to(end, alignment).unwrap_or(u64::MAX);
    }
    Ok(())
}
