//! Conversions between sluice [`Tensor`]s and ONNX Runtime values. Primitive buffers are handed over without a copy.

use ort::memory::Allocator;
use ort::session::SessionInputValue;
use ort::value::{DynTensor, DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use ort::AsPointer;

use super::InferError;
use crate::model::signature::datatype_of;
use crate::tensor::{DataType, Tensor, TensorData};

/// Moves a tensor's buffer into an ONNX Runtime value (strings are copied, as ONNX Runtime stores its own).
pub fn to_input(tensor: Tensor) -> Result<(String, SessionInputValue<'static>), InferError> {
    let Tensor { name, shape, data } = tensor;
    let err = |e: ort::Error| InferError::Input {
        input: name.clone(),
        message: e.to_string(),
    };
    let value: DynValue = match data {
        TensorData::Bool(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Int8(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Fp16(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Fp32(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Fp64(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Bytes(v) => string_tensor(shape, &v).map_err(err)?,
    };
    Ok((name, SessionInputValue::from(value)))
}

/// A string tensor holding `elements` byte for byte. Each element is written into a buffer of its exact length
/// (`GetResizedStringTensorElementBuffer`), so an element may hold NUL bytes: ort's `from_string_array` goes through
/// C strings and refuses them.
#[allow(unsafe_code)]
fn string_tensor(shape: Vec<usize>, elements: &[String]) -> ort::Result<DynValue> {
    if shape.iter().product::<usize>() != elements.len() {
        return Err(ort::Error::new(format!(
            "{} BYTES elements do not fill shape {shape:?}",
            elements.len()
        )));
    }
    let mut tensor = DynTensor::new(&Allocator::default(), TensorElementType::String, shape)?;
    let fill = ort::api().GetResizedStringTensorElementBuffer;
    for (index, element) in elements.iter().enumerate() {
        let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: `tensor` is a live string tensor of `elements.len()` elements (its shape's product, checked by
        // checked above), so `index` is in range; ONNX Runtime resizes that element to `element.len()` bytes and
        // returns its buffer, which stays valid until the element is resized again and is written exactly once here.
        unsafe {
            ort::Error::result_from_status(fill(
                tensor.ptr_mut(),
                index,
                element.len(),
                &mut buffer,
            ))?;
            if !element.is_empty() {
                std::ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), element.len());
            }
        }
    }
    Ok(tensor.into_dyn())
}

/// Copies an ONNX Runtime output into a tensor, taking the shape from the actual value.
pub fn from_output(name: String, value: &DynValue) -> Result<Tensor, InferError> {
    let err = |message: String| InferError::Output {
        output: name.clone(),
        message,
    };
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(err(format!("is a {}, not a tensor", value.dtype())));
    };
    let Some(datatype) = datatype_of(*ty) else {
        return Err(err(format!(
            "has element type {ty}, which V2 has no datatype for"
        )));
    };
    fn copy<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<i64>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((shape.to_vec(), data.to_vec()))
    }
    let result = match datatype {
        DataType::Bool => copy(value).map(|(s, d)| (s, TensorData::Bool(d))),
        DataType::Uint8 => copy(value).map(|(s, d)| (s, TensorData::Uint8(d))),
        DataType::Uint16 => copy(value).map(|(s, d)| (s, TensorData::Uint16(d))),
        DataType::Uint32 => copy(value).map(|(s, d)| (s, TensorData::Uint32(d))),
        DataType::Uint64 => copy(value).map(|(s, d)| (s, TensorData::Uint64(d))),
        DataType::Int8 => copy(value).map(|(s, d)| (s, TensorData::Int8(d))),
        DataType::Int16 => copy(value).map(|(s, d)| (s, TensorData::Int16(d))),
        DataType::Int32 => copy(value).map(|(s, d)| (s, TensorData::Int32(d))),
        DataType::Int64 => copy(value).map(|(s, d)| (s, TensorData::Int64(d))),
        DataType::Fp16 => copy(value).map(|(s, d)| (s, TensorData::Fp16(d))),
        DataType::Fp32 => copy(value).map(|(s, d)| (s, TensorData::Fp32(d))),
        DataType::Fp64 => copy(value).map(|(s, d)| (s, TensorData::Fp64(d))),
        DataType::Bytes => value
            .try_extract_strings()
            .map(|(s, d)| (s.to_vec(), TensorData::Bytes(d))),
    };
    let (shape, data) = result.map_err(|e| err(e.to_string()))?;
    let shape = shape
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| err(format!("has a negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor { name, shape, data })
}
