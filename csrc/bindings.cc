// dm_env_rpc_fast._native: numpy arrays <-> the C++ codec core.
//
// The only file that knows Python.  It turns arrays into spans for the core
// and parse results into arrays: views whose base keeps the input buffer
// alive, or fresh arrays.  Hot entry points use the NumPy C API directly
// (py::array is too slow for the 1 us scalar budget).  Strings, protos, odd
// Python values and non-step envelopes go back to Python callables that
// _native_backend registers at import.
#include <pybind11/pybind11.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL dm_env_rpc_fast_ARRAY_API
#include <numpy/arrayobject.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "step_codec.h"
#include "tensor_codec.h"

namespace py = pybind11;
using dmrf::Span;
using dmrf::TensorInput;
using dmrf::TensorParse;

namespace {

// Work above this many bytes runs with the GIL released.
constexpr size_t kReleaseGil = size_t{64} << 10;

// Runs f() (which must not touch Python) with the GIL released when it works
// over more than kReleaseGil bytes; below that, releasing costs more than it frees.
template <class F>
void maybe_nogil(size_t bytes, F&& f) {
  if (bytes > kReleaseGil) {
    py::gil_scoped_release nogil;
    f();
  } else {
    f();
  }
}

// Python callables registered by _native_backend (kept for the process lifetime).
struct Fallbacks {
  PyObject* decode_object_tensor = nullptr;  // (list of byte spans) -> value
  PyObject* check_uid = nullptr;             // (key) -> int, or raises
  PyObject* slow_value = nullptr;            // (value) -> bytes | (kind, array, shape)
};
Fallbacks g_fallbacks;
bool g_default_int_is_64 = true;  // np.asarray(<int>) gives int64
uint64_t g_max_broadcast_bytes = dmrf::kDefaultMaxBroadcastBytes;  // set by _native_backend

PyObject* need_fallback(PyObject* f) {
  if (!f) throw std::runtime_error("dm_env_rpc_fast._native: fallbacks not registered");
  return f;
}

int typenum_of(int kind) {
  switch (kind) {
    case dmrf::kFloat: return NPY_FLOAT32;
    case dmrf::kDouble: return NPY_FLOAT64;
    case dmrf::kInt8: return NPY_INT8;
    case dmrf::kInt32: return NPY_INT32;
    case dmrf::kInt64: return NPY_INT64;
    case dmrf::kUint8: return NPY_UINT8;
    case dmrf::kUint32: return NPY_UINT32;
    case dmrf::kUint64: return NPY_UINT64;
    case dmrf::kBool: return NPY_BOOL;
    default: throw std::logic_error("no numpy type for payload kind");
  }
}

// The payload kind of a builtin numpy type number (0: none; the caller then
// takes the Python path, which raises the proper TypeError).
int kind_of_typenum(int type_num) {
  switch (type_num) {
    case NPY_BOOL: return dmrf::kBool;
    case NPY_BYTE: return dmrf::kInt8;
    case NPY_UBYTE: return dmrf::kUint8;
    case NPY_INT: return sizeof(int) == 4 ? dmrf::kInt32 : 0;
    case NPY_UINT: return sizeof(int) == 4 ? dmrf::kUint32 : 0;
    case NPY_LONG: return sizeof(long) == 8 ? dmrf::kInt64 : dmrf::kInt32;
    case NPY_ULONG: return sizeof(long) == 8 ? dmrf::kUint64 : dmrf::kUint32;
    case NPY_LONGLONG: return dmrf::kInt64;
    case NPY_ULONGLONG: return dmrf::kUint64;
    case NPY_FLOAT: return dmrf::kFloat;
    case NPY_DOUBLE: return dmrf::kDouble;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------
// Encoding.

// A numeric value in the core's terms, with whatever keeps its memory alive.
struct Value {
  TensorInput in;
  std::vector<int64_t> dims;
  py::object keep;
  alignas(8) unsigned char scalar[16] = {};

  void set_shape(int ndim, const npy_intp* shape) {
    dims.assign(shape, shape + ndim);
    in.shape = dims.data();
    in.ndim = dims.size();
  }
};

// Points v at a C-contiguous, native-order ndarray of a supported type.
// Returns false (no error set) if arr is not one.
bool from_ndarray(PyArrayObject* arr, Value& v) {
  const int kind = kind_of_typenum(PyArray_TYPE(arr));
  if (!kind || !PyArray_ISNOTSWAPPED(arr)) return false;
  if (!PyArray_IS_C_CONTIGUOUS(arr)) {
    PyObject* copy = PyArray_NewCopy(arr, NPY_CORDER);
    if (!copy) throw py::error_already_set();
    v.keep = py::reinterpret_steal<py::object>(copy);
    arr = reinterpret_cast<PyArrayObject*>(copy);
  }
  v.in.kind = kind;
  v.in.data = PyArray_DATA(arr);
  v.in.count = static_cast<size_t>(PyArray_SIZE(arr));
  v.set_shape(PyArray_NDIM(arr), PyArray_DIMS(arr));
  return true;
}

// What _common.prepare would give, for the common values, without Python:
// plain ndarrays, numpy scalars, Python floats, bools and int64-range ints.
bool fast_value(PyObject* obj, Value& v) {
  if (PyArray_CheckExact(obj)) return from_ndarray(reinterpret_cast<PyArrayObject*>(obj), v);
  v.in.count = 1;
  v.in.ndim = 0;
  v.in.data = v.scalar;
  if (PyFloat_CheckExact(obj)) {
    const double d = PyFloat_AS_DOUBLE(obj);
    std::memcpy(v.scalar, &d, sizeof d);
    v.in.kind = dmrf::kDouble;
    return true;
  }
  if (PyBool_Check(obj)) {
    v.scalar[0] = obj == Py_True;
    v.in.kind = dmrf::kBool;
    return true;
  }
  if (PyLong_CheckExact(obj)) {
    if (!g_default_int_is_64) return false;
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow) return false;
    if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
    const int64_t x64 = x;
    std::memcpy(v.scalar, &x64, sizeof x64);
    v.in.kind = dmrf::kInt64;
    return true;
  }
  if (PyArray_IsScalar(obj, Generic)) {
    PyArray_Descr* descr = PyArray_DescrFromScalar(obj);
    if (!descr) throw py::error_already_set();
    const int kind = kind_of_typenum(descr->type_num);
    Py_DECREF(descr);
    if (!kind) return false;
    PyArray_ScalarAsCtype(obj, v.scalar);
    v.in.kind = kind;
    return true;
  }
  return false;
}

// The (kind, array, shape) that _common.prepare returned, in the core's terms.
void from_prepared(PyObject* kind_obj, PyObject* array_obj, PyObject* shape_obj, Value& v) {
  const long kind = PyLong_AsLong(kind_obj);
  if (kind == -1 && PyErr_Occurred()) throw py::error_already_set();
  PyObject* arr = PyArray_FROM_OF(array_obj, NPY_ARRAY_C_CONTIGUOUS);
  if (!arr) throw py::error_already_set();
  v.keep = py::reinterpret_steal<py::object>(arr);
  auto* a = reinterpret_cast<PyArrayObject*>(arr);
  if (kind < dmrf::kFloat || kind > dmrf::kBool ||
      static_cast<size_t>(PyArray_ITEMSIZE(a)) != dmrf::element_size(static_cast<int>(kind))) {
    throw py::type_error("encode: the array does not match its payload kind");
  }
  v.in.kind = static_cast<int>(kind);
  v.in.data = PyArray_DATA(a);
  v.in.count = static_cast<size_t>(PyArray_SIZE(a));
  py::tuple shape = py::reinterpret_borrow<py::object>(shape_obj).cast<py::tuple>();
  v.dims.clear();
  for (py::handle d : shape) {
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(d.ptr(), &overflow);
    if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow || x < INT32_MIN || x > INT32_MAX) {
      throw py::value_error("Tensor shape dimension " + py::str(d).cast<std::string>() +
                            " does not fit int32");
    }
    v.dims.push_back(x);
  }
  v.in.shape = v.dims.data();
  v.in.ndim = v.dims.size();
}

size_t input_bytes(const TensorInput& in) { return in.count * dmrf::element_size(in.kind); }

py::bytes encode_input(const TensorInput& in) {
  dmrf::TensorSizes sizes;
  const size_t bytes = input_bytes(in);
  maybe_nogil(bytes, [&] { sizes = dmrf::tensor_size(in); });
  PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(sizes.total));
  if (!out) throw py::error_already_set();
  py::bytes result = py::reinterpret_steal<py::bytes>(out);
  auto* p = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out));
  maybe_nogil(bytes, [&] { dmrf::write_tensor(in, sizes, p); });
  return result;
}

// encode_tensor's fast path: bytes, or None when the value needs _common.prepare.
py::object encode_tensor_fast(py::handle value) {
  Value v;
  if (!fast_value(value.ptr(), v)) return py::none();
  return encode_input(v.in);
}

py::bytes encode_prepared(py::handle kind, py::handle array, py::handle shape) {
  Value v;
  from_prepared(kind.ptr(), array.ptr(), shape.ptr(), v);
  return encode_input(v.in);
}

uint64_t to_uid(PyObject* key) {
  if (PyLong_CheckExact(key)) {
    const unsigned long long x = PyLong_AsUnsignedLongLong(key);
    if (!(x == static_cast<unsigned long long>(-1) && PyErr_Occurred())) return x;
    PyErr_Clear();  // negative or too big: check_uid raises the proper error
  }
  PyObject* checked = PyObject_CallOneArg(need_fallback(g_fallbacks.check_uid), key);
  if (!checked) throw py::error_already_set();
  const unsigned long long x = PyLong_AsUnsignedLongLong(checked);
  Py_DECREF(checked);
  if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
  return x;
}

// A step message gathered from Python and sized, ready to write.  `values`
// holds what the items point into (it is sized once and never moved from).
struct PreparedStep {
  dmrf::StepMessage m;
  std::vector<Value> values;
  py::object items;  // the (uid, value) pairs, alive while the items point into them
  size_t data_bytes = 0;  // the array data: decides whether sizing and writing release the GIL
};

void prepare_step(py::handle mapping, py::handle requested, int32_t state, bool response,
                  PreparedStep& s) {
  dmrf::StepMessage& m = s.m;
  m.response = response;
  m.state = state;
  PyObject* items_obj = PyMapping_Items(mapping.ptr());
  if (!items_obj) throw py::error_already_set();
  s.items = py::reinterpret_steal<py::object>(items_obj);
  const size_t n = static_cast<size_t>(PyList_GET_SIZE(items_obj));
  std::vector<Value>& values = s.values;
  values.resize(n);  // sized once: items point into it
  m.items.resize(n);
  for (size_t i = 0; i < n; ++i) {
    PyObject* pair = PyList_GET_ITEM(items_obj, i);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
      throw py::type_error("items() of the tensor mapping must give (uid, value) pairs");
    }
    dmrf::StepItem& item = m.items[i];
    item.key = to_uid(PyTuple_GET_ITEM(pair, 0));
    PyObject* value = PyTuple_GET_ITEM(pair, 1);
    Value& v = values[i];
    if (!fast_value(value, v)) {
      PyObject* slow = PyObject_CallOneArg(need_fallback(g_fallbacks.slow_value), value);
      if (!slow) throw py::error_already_set();
      v.keep = py::reinterpret_steal<py::object>(slow);
      if (PyBytes_Check(slow)) {
        item.is_raw = true;
        item.raw = reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(slow));
        item.raw_len = static_cast<size_t>(PyBytes_GET_SIZE(slow));
        continue;
      }
      if (!PyTuple_Check(slow) || PyTuple_GET_SIZE(slow) != 3) {
        throw py::type_error("slow_value must return bytes or (kind, array, shape)");
      }
      py::object held = v.keep;  // from_prepared replaces v.keep; the tuple's items must live
      from_prepared(PyTuple_GET_ITEM(slow, 0), PyTuple_GET_ITEM(slow, 1),
                    PyTuple_GET_ITEM(slow, 2), v);
    }
    item.tensor = v.in;
    s.data_bytes += input_bytes(v.in);
  }
  dmrf::sort_items(m.items);
  if (!requested.is_none()) {
    PyObject* seq = PySequence_Fast(requested.ptr(), "requested observations must be a sequence");
    if (!seq) throw py::error_already_set();
    py::object keep_seq = py::reinterpret_steal<py::object>(seq);
    const Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    m.requested.reserve(static_cast<size_t>(k));
    for (Py_ssize_t i = 0; i < k; ++i) m.requested.push_back(to_uid(PySequence_Fast_GET_ITEM(seq, i)));
  }
  maybe_nogil(s.data_bytes, [&] { dmrf::size_step(m); });
}

// Writes the message into p (room for cap bytes) if it fits.
void write_prepared(const PreparedStep& s, uint8_t* p, size_t cap) {
  maybe_nogil(s.data_bytes, [&] { dmrf::write_step_into(s.m, p, cap); });
}

py::bytes encode_step(py::handle mapping, py::handle requested, int32_t state, bool response) {
  PreparedStep s;
  prepare_step(mapping, requested, state, response, s);
  PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(s.m.total));
  if (!out) throw py::error_already_set();
  py::bytes result = py::reinterpret_steal<py::bytes>(out);
  write_prepared(s, reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out)), s.m.total);
  return result;
}

// A writable C-contiguous buffer export of `out`, released on scope exit.
class OutBuffer {
 public:
  explicit OutBuffer(py::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_WRITABLE) != 0) {
      // One error for every refusal (read-only, strided, no buffer, released),
      // worded as _common.out_buffer words it.
      PyErr_Clear();
      const std::string type_name = py::str(py::type::handle_of(obj).attr("__name__"));
      throw py::type_error("out must be a writable C-contiguous buffer, not " + type_name);
    }
  }
  ~OutBuffer() { PyBuffer_Release(&view_); }
  OutBuffer(const OutBuffer&) = delete;
  OutBuffer& operator=(const OutBuffer&) = delete;

  uint8_t* data() const { return static_cast<uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

int32_t to_state(py::handle state) {
  // bool is an int subclass, but protobuf refuses it for an enum field (numpy's
  // bool too, which older numpy lets __index__ with only a DeprecationWarning).
  if (PyBool_Check(state.ptr()) || PyArray_IsScalar(state.ptr(), Bool)) {
    throw py::type_error("StepResponse state must be an integer, not bool");
  }
  PyObject* index = PyNumber_Index(state.ptr());
  if (!index) {
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
    PyErr_Clear();  // worded as the pure backend words it
    throw py::type_error("StepResponse state must be an integer, not " +
                         py::str(py::type::handle_of(state).attr("__name__")).cast<std::string>());
  }
  py::object index_obj = py::reinterpret_steal<py::object>(index);
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(index, &overflow);
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow || x < INT32_MIN || x > INT32_MAX) {
    throw py::value_error("StepResponse state " + py::str(index_obj).cast<std::string>() +
                          " does not fit int32");
  }
  return static_cast<int32_t>(x);
}

// encode_step_response straight into the caller's buffer: the message size,
// and the message in out[0:size] if it fits (else out is not touched).  The
// export of `out` is held throughout, so a bytearray cannot be resized under us.
size_t encode_step_response_into(py::handle out, py::handle state, py::handle observations) {
  OutBuffer target(out);
  const int32_t s32 = to_state(state);
  PreparedStep s;
  prepare_step(observations, py::none(), s32, true, s);
  write_prepared(s, target.data(), target.size());
  return s.m.total;
}

// ---------------------------------------------------------------------------
// Decoding.

// The bytes of a buffer argument, and (on demand) the object views keep alive.
class Input {
 public:
  explicit Input(py::handle obj) : obj_(obj) {
    if (PyBytes_CheckExact(obj.ptr())) {
      data_ = reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(obj.ptr()));
      size_ = static_cast<size_t>(PyBytes_GET_SIZE(obj.ptr()));
    } else {
      if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) {
        // One error type for every backend: a strided buffer is the wrong kind of argument.
        if (PyObject_CheckBuffer(obj.ptr())) {
          PyErr_Clear();
          throw py::type_error("decode needs a readable C-contiguous buffer");
        }
        throw py::error_already_set();
      }
      has_view_ = true;
      data_ = static_cast<const uint8_t*>(view_.buf);
      size_ = static_cast<size_t>(view_.len);
    }
  }
  ~Input() {
    if (has_view_) PyBuffer_Release(&view_);
  }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  py::handle object() const { return obj_; }

  // The base for views and the address its bytes start at.  bytes are
  // immutable and serve as their own base; any other exporter is wrapped in a
  // memoryview, whose export pins the memory (a bytearray cannot resize).
  const uint8_t* view_base(py::object* base) {
    if (!base_) {
      if (!has_view_) {
        base_ = py::reinterpret_borrow<py::object>(obj_);
        base_data_ = data_;
      } else {
        PyObject* mv = PyMemoryView_FromObject(obj_.ptr());
        if (!mv) throw py::error_already_set();
        base_ = py::reinterpret_steal<py::object>(mv);
        base_data_ = static_cast<const uint8_t*>(PyMemoryView_GET_BUFFER(mv)->buf);
        if (static_cast<size_t>(PyMemoryView_GET_BUFFER(mv)->len) != size_) {
          throw py::value_error("the buffer changed size while being decoded");
        }
      }
    }
    *base = base_;
    return base_data_;
  }

 private:
  py::handle obj_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  Py_buffer view_{};
  bool has_view_ = false;
  py::object base_;
  const uint8_t* base_data_ = nullptr;
};

py::object steal_or_throw(PyObject* obj) {
  if (!obj) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(obj);
}

std::vector<npy_intp> npy_dims(const std::vector<int64_t>& dims) {
  return std::vector<npy_intp>(dims.begin(), dims.end());
}

// A read-only array over the payload's single run in the input buffer.
py::object make_view(Input& input, const TensorParse& t, const std::vector<npy_intp>& dims,
                     int typenum) {
  py::object base;
  const uint8_t* start = input.view_base(&base);
  const size_t off = t.runs.empty() ? 0 : t.runs[0].off;
  PyArray_Descr* descr = PyArray_DescrFromType(typenum);
  if (!descr) throw py::error_already_set();
  // flags 0: read-only; numpy works out alignment and contiguity itself.
  py::object arr = steal_or_throw(PyArray_NewFromDescr(
      &PyArray_Type, descr, static_cast<int>(dims.size()), const_cast<npy_intp*>(dims.data()),
      nullptr, const_cast<uint8_t*>(start + off), 0, nullptr));
  if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr.ptr()), base.release().ptr()) < 0) {
    throw py::error_already_set();
  }
  return arr;
}

[[noreturn]] void throw_changed() {
  throw py::value_error("the buffer changed while it was being decoded");
}

// Fills cap elements of out from the payload, without the GIL for big ones.
// Fewer elements than asked means the bytes changed since they were counted
// (another process writing shared memory): the result would be partly
// unwritten, so that is an error.
void fill_maybe_nogil(const uint8_t* data, const TensorParse& t, void* out, uint64_t cap) {
  uint64_t written = 0;
  maybe_nogil(t.run_bytes, [&] { written = dmrf::fill_elements(data, t, out, cap); });
  if (written != cap) throw_changed();
}

// The one element of a scalar or broadcast payload.
void first_element(const uint8_t* data, const TensorParse& t, unsigned char (&elem)[8]) {
  if (dmrf::fill_elements(data, t, elem, 1) != 1) throw_changed();
}

// Repeats the element w bytes wide over n elements at out.
void broadcast_fill(unsigned char* out, size_t n, size_t w, const unsigned char* elem) {
  maybe_nogil(n * w, [&] {
    if (w == 1) {
      std::memset(out, elem[0], n);
    } else {
      for (size_t i = 0; i < n; ++i) std::memcpy(out + i * w, elem, w);
    }
  });
}

// The shape plan of a numeric Tensor (the errors of dm_env_rpc's rules).
dmrf::ShapePlan plan_numeric(const TensorParse& t) {
  if (t.kind == dmrf::kNone) throw py::type_error("Tensor has no payload: cannot tell its dtype");
  return dmrf::plan_shape(t.count, t.shape, dmrf::element_size(t.kind), g_max_broadcast_bytes);
}

// A numeric Tensor's value by dm_env_rpc's rules (see the backend docstrings).
py::object materialise(Input& input, const TensorParse& t, const dmrf::ShapePlan& plan,
                       bool zero_copy) {
  const int typenum = typenum_of(t.kind);
  if (plan.mode != dmrf::ShapePlan::kReshape) {
    alignas(8) unsigned char elem[8] = {};
    first_element(input.data(), t, elem);
    PyArray_Descr* descr = PyArray_DescrFromType(typenum);
    if (!descr) throw py::error_already_set();
    if (plan.mode == dmrf::ShapePlan::kScalar) {
      PyObject* scalar = PyArray_Scalar(elem, descr, nullptr);
      Py_DECREF(descr);
      return steal_or_throw(scalar);
    }
    Py_DECREF(descr);
    const std::vector<npy_intp> dims = npy_dims(plan.dims);
    py::object arr = steal_or_throw(
        PyArray_SimpleNew(static_cast<int>(dims.size()), const_cast<npy_intp*>(dims.data()), typenum));
    auto* a = reinterpret_cast<PyArrayObject*>(arr.ptr());
    broadcast_fill(static_cast<unsigned char*>(PyArray_DATA(a)), static_cast<size_t>(PyArray_SIZE(a)),
                   dmrf::element_size(t.kind), elem);
    return arr;
  }
  const std::vector<npy_intp> dims = npy_dims(plan.dims);
  const bool bytes_kind = t.kind == dmrf::kInt8 || t.kind == dmrf::kUint8;
  const bool fixed = bytes_kind || t.kind == dmrf::kFloat || t.kind == dmrf::kDouble;
  if (bytes_kind || (zero_copy && fixed && t.runs.size() == 1)) {
    return make_view(input, t, dims, typenum);
  }
  py::object arr = steal_or_throw(
      PyArray_SimpleNew(static_cast<int>(dims.size()), const_cast<npy_intp*>(dims.data()), typenum));
  auto* a = reinterpret_cast<PyArrayObject*>(arr.ptr());
  fill_maybe_nogil(input.data(), t, PyArray_DATA(a), static_cast<uint64_t>(PyArray_SIZE(a)));
  if (zero_copy && fixed) PyArray_CLEARFLAGS(a, NPY_ARRAY_WRITEABLE);
  return arr;
}

// ---------------------------------------------------------------------------
// Decoding into the caller's arrays (out=).

// _common.check_out and _common.store_decoded, registered by _native_backend.
struct OutHelpers {
  PyObject* check_out = nullptr;      // (uid | None, kind, shape, target, wire) -> raises
  PyObject* store_decoded = nullptr;  // (uid | None, value, target, wire, write) -> target
};
OutHelpers g_out;

// Whether `target` can take the payload: exactly _common.check_out's rules
// (which say what is wrong: it is called when this says no).
bool target_fits(PyObject* target, int kind, const std::vector<int64_t>& dims, const Input& input) {
  if (kind < dmrf::kFloat || kind > dmrf::kBool || !PyArray_Check(target)) return false;
  auto* a = reinterpret_cast<PyArrayObject*>(target);
  PyArray_Descr* want = PyArray_DescrFromType(typenum_of(kind));
  if (!want) throw py::error_already_set();
  const bool same_type = PyArray_EquivTypes(PyArray_DESCR(a), want);
  Py_DECREF(want);
  if (!same_type || PyArray_NDIM(a) != static_cast<int>(dims.size())) return false;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (PyArray_DIM(a, static_cast<int>(i)) != dims[i]) return false;
  }
  if (!PyArray_ISWRITEABLE(a) || !PyArray_IS_C_CONTIGUOUS(a)) return false;
  // np.may_share_memory(target, wire): the byte ranges overlap.
  const auto* begin = static_cast<const uint8_t*>(PyArray_DATA(a));
  const size_t nbytes = static_cast<size_t>(PyArray_NBYTES(a));
  if (nbytes && input.size() && begin < input.data() + input.size() &&
      input.data() < begin + nbytes) {
    return false;
  }
  return true;
}

// Raises _common.check_out's error for a target that does not fit.
[[noreturn]] void reject_target(py::handle uid, int kind, const std::vector<int64_t>& dims,
                                PyObject* target, const Input& input) {
  py::tuple shape(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) shape[i] = py::int_(dims[i]);
  PyObject* r = PyObject_CallFunctionObjArgs(need_fallback(g_out.check_out), uid.ptr(),
                                             py::int_(kind).ptr(), shape.ptr(), target,
                                             input.object().ptr(), nullptr);
  if (!r) throw py::error_already_set();
  Py_DECREF(r);
  throw std::logic_error("dm_env_rpc_fast._native: an out= target was refused but check_out passed it");
}

// The decoded shape of a plan (a scalar: 0-d).
const std::vector<int64_t>& plan_dims(const dmrf::ShapePlan& plan) {
  static const std::vector<int64_t> kScalarDims;
  return plan.mode == dmrf::ShapePlan::kScalar ? kScalarDims : plan.dims;
}

void check_target(py::handle uid, const TensorParse& t, const dmrf::ShapePlan& plan,
                  PyObject* target, const Input& input) {
  const std::vector<int64_t>& dims = plan_dims(plan);
  if (!target_fits(target, t.kind, dims, input)) reject_target(uid, t.kind, dims, target, input);
}

// Writes a numeric payload into a target that check_target accepted.
void write_target(Input& input, const TensorParse& t, const dmrf::ShapePlan& plan,
                  PyObject* target) {
  auto* a = reinterpret_cast<PyArrayObject*>(target);
  auto* out = static_cast<unsigned char*>(PyArray_DATA(a));
  const size_t n = static_cast<size_t>(PyArray_SIZE(a));
  if (plan.mode == dmrf::ShapePlan::kReshape) {
    fill_maybe_nogil(input.data(), t, out, n);
    return;
  }
  alignas(8) unsigned char elem[8] = {};
  first_element(input.data(), t, elem);
  broadcast_fill(out, n, dmrf::element_size(t.kind), elem);
}

// A string/proto (or protobuf-decoded) value into its target: check only, or write.
py::object store_decoded(py::handle uid, py::handle value, PyObject* target, const Input& input,
                         bool write) {
  return steal_or_throw(PyObject_CallFunctionObjArgs(
      need_fallback(g_out.store_decoded), uid.ptr(), value.ptr(), target, input.object().ptr(),
      write ? Py_True : Py_False, nullptr));
}

// out[key] of a dict (None when absent or None), as a new reference.
py::object lookup_target(py::handle out, py::handle key) {
  PyObject* found = PyDict_GetItemWithError(out.ptr(), key.ptr());
  if (!found) {
    if (PyErr_Occurred()) throw py::error_already_set();
    return py::none();
  }
  return py::reinterpret_borrow<py::object>(found);
}

py::object decode_object(Input& input, const std::vector<Span>& spans) {
  py::list parts;
  for (const Span& s : spans) {
    parts.append(steal_or_throw(PyBytes_FromStringAndSize(
        reinterpret_cast<const char*>(input.data() + s.off), static_cast<Py_ssize_t>(s.len))));
  }
  return steal_or_throw(PyObject_CallOneArg(need_fallback(g_fallbacks.decode_object_tensor),
                                            parts.ptr()));
}

// `out`: None, or an array to decode into (the backend checked nothing yet).
py::object decode_tensor(py::handle buf, bool zero_copy, py::handle out) {
  Input input(buf);
  TensorParse t;
  maybe_nogil(input.size(), [&] {
    dmrf::parse_tensor(input.data(), input.size(), Span{0, input.size()}, dmrf::kMaxDepth, t);
  });
  if (t.has_object) {
    py::list spans;
    spans.append(buf);
    py::object value = steal_or_throw(
        PyObject_CallOneArg(need_fallback(g_fallbacks.decode_object_tensor), spans.ptr()));
    if (out.is_none()) return value;
    return store_decoded(py::none(), value, out.ptr(), input, true);
  }
  const dmrf::ShapePlan plan = plan_numeric(t);
  if (out.is_none()) return materialise(input, t, plan, zero_copy);
  check_target(py::none(), t, plan, out.ptr(), input);
  write_target(input, t, plan, out.ptr());
  return py::reinterpret_borrow<py::object>(out);
}

// Shared by both directions: the step payload as {uid: value}, or the
// payload number when the caller must go through protobuf.  `out`: None, or
// a dict {uid: array or None} (response only).
py::object decode_step(py::handle buf, bool zero_copy, bool validated, bool response,
                       py::handle out = py::none()) {
  Input input(buf);
  dmrf::StepParse p;
  maybe_nogil(input.size(),
              [&] { dmrf::parse_step_envelope(input.data(), input.size(), response, p); });
  if (p.payload != dmrf::kStepPayload || (p.unchecked && !validated)) {
    return py::int_(p.payload);
  }
  py::dict values;
  if (out.is_none()) {
    for (const dmrf::StepEntry& e : p.entries) {
      py::object key = steal_or_throw(PyLong_FromUnsignedLongLong(e.key));
      values[key] = e.tensor.has_object ? decode_object(input, e.spans)
                                        : materialise(input, e.tensor, plan_numeric(e.tensor),
                                                      zero_copy);
    }
  } else {
    // Everything that can fail is checked before any target is written:
    // every entry's shape rules and object payload in order, and each
    // target against its entry.  (Only bytes changing underfoot can still
    // fail after the first write.)
    const size_t n = p.entries.size();
    std::vector<py::object> keys(n), targets(n), objects(n);
    std::vector<dmrf::ShapePlan> plans(n);
    for (size_t i = 0; i < n; ++i) {
      const dmrf::StepEntry& e = p.entries[i];
      keys[i] = steal_or_throw(PyLong_FromUnsignedLongLong(e.key));
      targets[i] = lookup_target(out, keys[i]);
      const bool has_target = !targets[i].is_none();
      if (e.tensor.has_object) {
        objects[i] = decode_object(input, e.spans);
        if (has_target) store_decoded(keys[i], objects[i], targets[i].ptr(), input, false);
      } else {
        plans[i] = plan_numeric(e.tensor);
        if (has_target) check_target(keys[i], e.tensor, plans[i], targets[i].ptr(), input);
      }
    }
    for (size_t i = 0; i < n; ++i) {
      const dmrf::StepEntry& e = p.entries[i];
      if (targets[i].is_none()) {
        values[keys[i]] = e.tensor.has_object ? objects[i]
                                              : materialise(input, e.tensor, plans[i], zero_copy);
      } else if (e.tensor.has_object) {
        values[keys[i]] = store_decoded(keys[i], objects[i], targets[i].ptr(), input, true);
      } else {
        write_target(input, e.tensor, plans[i], targets[i].ptr());
        values[keys[i]] = targets[i];
      }
    }
  }
  if (response) return py::make_tuple(p.state, values);
  py::list requested(p.requested.size());
  for (size_t i = 0; i < p.requested.size(); ++i) {
    requested[i] = steal_or_throw(PyLong_FromUnsignedLongLong(p.requested[i]));
  }
  return py::make_tuple(values, requested);
}

void set_fallbacks(py::object decode_object_tensor, py::object check_uid, py::object slow_value) {
  // Leaked on purpose: they must outlive every call, up to interpreter exit.
  Py_XDECREF(g_fallbacks.decode_object_tensor);
  Py_XDECREF(g_fallbacks.check_uid);
  Py_XDECREF(g_fallbacks.slow_value);
  g_fallbacks.decode_object_tensor = decode_object_tensor.release().ptr();
  g_fallbacks.check_uid = check_uid.release().ptr();
  g_fallbacks.slow_value = slow_value.release().ptr();
}

bool truthy(py::handle h) {
  const int r = PyObject_IsTrue(h.ptr());
  if (r < 0) throw py::error_already_set();
  return r != 0;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  if (_import_array() < 0) throw py::error_already_set();
  {
    py::object probe = steal_or_throw(PyArray_FROM_O(py::int_(0).ptr()));
    g_default_int_is_64 = PyArray_ITEMSIZE(reinterpret_cast<PyArrayObject*>(probe.ptr())) == 8;
  }
  m.doc() = "C++ core of dm_env_rpc_fast.codec (use dm_env_rpc_fast.codec, not this).";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const dmrf::DecodeError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("set_fallbacks", &set_fallbacks, py::arg("decode_object_tensor"), py::arg("check_uid"),
        py::arg("slow_value"));
  m.def("set_max_broadcast_bytes", [](uint64_t limit) { g_max_broadcast_bytes = limit; },
        py::arg("limit"));
  m.attr("DEFAULT_MAX_BROADCAST_BYTES") = py::int_(dmrf::kDefaultMaxBroadcastBytes);
  m.attr("MAX_DEPTH") = py::int_(dmrf::kMaxDepth);
  m.attr("NESTING_ERROR") = py::str(dmrf::nesting_error());
  m.def("encode_tensor_fast", &encode_tensor_fast, py::arg("value"));
  m.def("encode_prepared", &encode_prepared, py::arg("kind"), py::arg("array"), py::arg("shape"));
  m.def("set_out_helpers", [](py::object check_out, py::object store_decoded) {
    // Leaked on purpose, as the fallbacks.
    Py_XDECREF(g_out.check_out);
    Py_XDECREF(g_out.store_decoded);
    g_out.check_out = check_out.release().ptr();
    g_out.store_decoded = store_decoded.release().ptr();
  }, py::arg("check_out"), py::arg("store_decoded"));
  m.def("decode_tensor", [](py::handle buf, py::handle zero_copy, py::handle out) {
    return decode_tensor(buf, truthy(zero_copy), out);
  }, py::arg("buf"), py::arg("zero_copy"), py::arg("out") = py::none());
  m.def("encode_step_request", [](py::handle actions, py::handle requested) {
    return encode_step(actions, requested, 0, false);
  }, py::arg("actions"), py::arg("requested"));
  m.def("encode_step_response", [](py::handle state, py::handle observations) {
    return encode_step(observations, py::none(), to_state(state), true);
  }, py::arg("state"), py::arg("observations"));
  m.def("encode_step_response_into", &encode_step_response_into, py::arg("out"),
        py::arg("state"), py::arg("observations"));
  m.def("decode_step_request", [](py::handle buf, py::handle zero_copy, bool validated) {
    return decode_step(buf, truthy(zero_copy), validated, false);
  }, py::arg("buf"), py::arg("zero_copy"), py::arg("validated"));
  m.def("decode_step_response",
        [](py::handle buf, py::handle zero_copy, bool validated, py::handle out) {
    if (!out.is_none() && !PyDict_Check(out.ptr())) throw py::type_error("out must be a dict or None");
    return decode_step(buf, truthy(zero_copy), validated, true, out);
  }, py::arg("buf"), py::arg("zero_copy"), py::arg("validated"), py::arg("out") = py::none());
}
