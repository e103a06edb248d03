// Minimal .npy (NumPy format 1.0-3.0) reading and writing for at::Tensor: little-endian uint8,
// int64 and float32, C order — what the exporter and numpy.save write, and what numpy.load reads.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace ochre::npy {

inline at::ScalarType dtype_of(const std::string& descr, const std::string& path) {
  if (descr == "|u1" || descr == "<u1") return at::kByte;
  if (descr == "<i8") return at::kLong;
  if (descr == "<f4") return at::kFloat;
  throw std::runtime_error(path + ": dtype " + descr + " is not supported (uint8, int64 or float32)");
}

inline std::string descr_of(at::ScalarType t) {
  if (t == at::kByte) return "|u1";
  if (t == at::kLong) return "<i8";
  if (t == at::kFloat) return "<f4";
  throw std::runtime_error(std::string("npy: cannot write dtype ") + c10::toString(t));
}

// The array in `path` as a CPU tensor (copied out of the file).
inline at::Tensor load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::string(magic, 6) != "\x93NUMPY")
    throw std::runtime_error(path + ": not a .npy file (write it with numpy.save)");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t n;
    f.read(reinterpret_cast<char*>(&n), 2);
    header_len = n;
  } else {
    f.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  f.read(header.data(), header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'")))
    throw std::runtime_error(path + ": header without descr");
  at::ScalarType dtype = dtype_of(m[1], path);
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True")))
    throw std::runtime_error(path + ": Fortran order; save a C-contiguous array");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    throw std::runtime_error(path + ": header without shape");
  std::vector<int64_t> shape;
  std::string dims = m[1];
  const std::regex number("\\d+");
  std::sregex_iterator it(dims.begin(), dims.end(), number), end;
  for (; it != end; ++it) shape.push_back(std::stoll(it->str()));
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) throw std::runtime_error(path + ": truncated data");
  return t;
}

// Writes a contiguous copy of `t` (format 1.0, header padded to 64 bytes).
inline void save(const std::string& path, const at::Tensor& tensor) {
  at::Tensor t = tensor.contiguous().cpu();
  std::string shape;
  for (int64_t d : t.sizes()) shape += std::to_string(d) + ", ";
  if (t.dim() > 1) shape.erase(shape.size() - 2);  // "(3,)" keeps its comma, "(2, 3)" drops the last
  std::string header = "{'descr': '" + descr_of(t.scalar_type()) + "', 'fortran_order': False, 'shape': (" +
                       shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot write");
  uint16_t n = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&n), 2);
  f << header;
  f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
}

}  // namespace ochre::npy
