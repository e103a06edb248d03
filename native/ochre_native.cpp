// ochre-native: the live loop with no Python. Loads the AOTInductor packages that
// `ochre export CKPT --format aoti --out DIR` writes (encode.pt2, step.pt2, decode.pt2,
// shapes.txt), encodes a context, then for each row of an action file runs one step (sampling
// inside the package, on a noise input) and one decode, and writes the frames.
//
// Legend: B players, S steps, h w token grid, H W pixels, L ConvGRU layers, C_l their widths.
//
// Noise: a CPU generator seeded with --seed at the start, one at::rand({B, h, w}) draw per step:
// libtorch's mt19937, the very code behind Python's
// torch.rand((B, h, w), generator=torch.Generator().manual_seed(seed)) that every Python runtime
// backend draws by (ochre.export.aoti.NOISE), so this loop and the Python `native` backend dream
// identical frames from the same packages, and the other backends the same up to near-ties.
//
// Device: the one the packages were compiled for (`ochre export --format aoti --device cuda` writes
// a `device cuda` line into shapes.txt; none means the CPU). On a GPU the tokens and state stay
// there; the noise and actions go over each step and the frames come back, as in the Python loop,
// and TF32 is off (fp32 means fp32, as the packages' parity check ran).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "npy.h"

namespace {

using Loader = torch::inductor::AOTIModelPackageLoader;

const char* kUsage = R"(usage: ochre-native --packages DIR [options]

  --packages DIR     folder written by `ochre export CKPT --format aoti --out DIR`
  --actions FILE     one step a line: `yaw pitch move_x move_z` (docs/data.md#actions units, in [-1, 1]),
                     separated by spaces or commas; blank lines and # comments ignored; every
                     player takes the row (default: --steps rows of no-op actions)
  --context FILE     .npy: uint8 (B, H, W, 3) frames (encoded by encode.pt2) or int64 (B, h, w)
                     tokens (default: DIR/context.npy)
  --steps N          steps to run (default: the action file's rows, else 64); an action file
                     shorter than N repeats from its start
  --seed N           noise seed (default 0)
  --out FILE         frames: .npy uint8 (S+1, B, H, W, 3), .rgb raw rgb24 in that order, or
                     .y4m (players side by side, 4:4:4 YUV, plays in ffplay/mpv)
  --tokens-out FILE  tokens .npy int64 (S+1, B, h, w)
  --warmup N         leading steps left out of the latency figures (default 3)
  --threads N        intra-op threads (default: libtorch's choice)
)";

struct Args {
  std::string packages, actions, context, out, tokens_out;
  int64_t steps = -1, seed = 0, warmup = 3, threads = 0;
};

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "ochre-native: " << msg << "\n";
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string*> text = {{"--packages", &a.packages}, {"--actions", &a.actions},
                                              {"--context", &a.context}, {"--out", &a.out},
                                              {"--tokens-out", &a.tokens_out}};
  std::map<std::string, int64_t*> num = {
      {"--steps", &a.steps}, {"--seed", &a.seed}, {"--warmup", &a.warmup}, {"--threads", &a.threads}};
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "-h" || key == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) fail(key + " needs a value\n" + kUsage);
    if (text.count(key)) {
      *text[key] = argv[++i];
    } else if (num.count(key)) {
      try {
        *num[key] = std::stoll(argv[++i]);
      } catch (const std::exception&) {
        fail(key + " needs an integer, got " + argv[i]);
      }
    } else {
      fail("unknown option " + key + "\n" + kUsage);
    }
  }
  if (a.packages.empty()) fail(std::string("--packages is required\n") + kUsage);
  return a;
}

// shapes.txt: "name n1 n2 ..." lines; `state` once per state tensor (any rank, batch left out);
// an optional "device cuda" line: the device the packages were compiled for (default cpu).
struct Shapes {
  std::map<std::string, std::vector<std::vector<int64_t>>> dims;
  std::string device = "cpu";
};

Shapes read_shapes(const std::string& dir) {
  std::ifstream f(dir + "/shapes.txt");
  if (!f) fail(dir + "/shapes.txt not found: is " + dir + " the output of `ochre export --format aoti`?");
  Shapes shapes;
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string name;
    in >> name;
    if (name == "device") {
      in >> shapes.device;
      continue;
    }
    std::vector<int64_t> dims;
    for (int64_t d; in >> d;) dims.push_back(d);
    shapes.dims[name].push_back(dims);
  }
  for (const char* need : {"batch", "grid", "frame", "state"})
    if (!shapes.dims.count(need)) fail(dir + "/shapes.txt has no `" + need + "` line");
  if (shapes.device != "cpu" && shapes.device != "cuda")
    fail(dir + "/shapes.txt: device `" + shapes.device + "`, expected cpu or cuda; re-export");
  return shapes;
}

// The device the packages run on, refusing CUDA packages where no GPU (or no CUDA libtorch) is.
at::Device pick_device(const Shapes& shapes, const std::string& dir) {
  if (shapes.device == "cpu") return at::kCPU;
  if (!torch::cuda::is_available())
    fail(dir + " holds packages compiled for CUDA, but " +
         (torch::cuda::device_count() == 0 ? std::string("no CUDA GPU is visible here")
                                           : std::string("CUDA is unavailable")) +
         " (a CPU-only libtorch sees none either): run it on the GPU it was compiled for, or re-export with "
         "`ochre export ... --format aoti --device cpu`");
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  return at::Device(at::kCUDA, 0);
}

// The action file as float32 (S, 4), by the rules of the Python runtime's ActionGuard: NaN and inf
// become 0, values clamp to [-1, 1] (counted, not fatal).
at::Tensor read_actions(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail(path + ": cannot open the action file");
  std::vector<float> values;
  int line_no = 0, clamped = 0;
  for (std::string line; std::getline(f, line);) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream in(line);
    std::vector<std::string> fields;
    for (std::string s; in >> s;) fields.push_back(s);
    if (fields.empty()) continue;
    if (fields.size() != 4)
      fail(path + ":" + std::to_string(line_no) + ": expected 4 numbers `yaw pitch move_x move_z`, got " +
           std::to_string(fields.size()));
    for (const auto& s : fields) {
      float v;
      try {
        size_t used = 0;
        v = std::stof(s, &used);
        if (used != s.size()) throw std::invalid_argument(s);
      } catch (const std::exception&) {
        fail(path + ":" + std::to_string(line_no) + ": not a number: " + s);
      }
      float c = std::isfinite(v) ? std::min(1.f, std::max(-1.f, v)) : 0.f;
      clamped += c != v || !std::isfinite(v);
      values.push_back(c);
    }
  }
  if (values.empty()) fail(path + ": no actions (one `yaw pitch move_x move_z` line per step)");
  if (clamped) std::cerr << "ochre-native: " << path << ": " << clamped << " values outside [-1, 1] clamped or non-finite set to 0\n";
  int64_t rows = static_cast<int64_t>(values.size() / 4);
  return at::from_blob(values.data(), {rows, 4}, at::kFloat).clone();
}

// Frames (S+1, B, H, W, 3) as a y4m stream: players side by side, full-range BT.601 4:4:4.
void write_y4m(const std::string& path, const at::Tensor& frames) {
  int64_t S = frames.size(0), B = frames.size(1), H = frames.size(2), W = frames.size(3);
  at::Tensor rgb = frames.permute({0, 2, 1, 3, 4}).reshape({S, H, B * W, 3}).to(at::kFloat);
  at::Tensor r = rgb.select(3, 0), g = rgb.select(3, 1), b = rgb.select(3, 2);
  at::Tensor yuv = at::stack({0.299 * r + 0.587 * g + 0.114 * b, 128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                              128 + 0.5 * r - 0.418688 * g - 0.081312 * b},
                             1)
                       .round()
                       .clamp(0, 255)
                       .to(at::kByte)
                       .contiguous();  // (S, 3, H, B*W) planar
  std::ofstream f(path, std::ios::binary);
  if (!f) fail(path + ": cannot write");
  f << "YUV4MPEG2 W" << B * W << " H" << H << " F8:1 Ip A1:1 C444 XCOLORRANGE=FULL\n";
  for (int64_t s = 0; s < S; ++s) {
    f << "FRAME\n";
    at::Tensor plane = yuv[s];
    f.write(static_cast<const char*>(plane.data_ptr()), static_cast<std::streamsize>(plane.nbytes()));
  }
}

void write_frames(const std::string& path, const at::Tensor& frames) {
  auto ends = [&](const std::string& ext) {
    return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
  };
  if (ends(".npy")) {
    ochre::npy::save(path, frames);
  } else if (ends(".y4m")) {
    write_y4m(path, frames);
  } else if (ends(".rgb")) {
    std::ofstream f(path, std::ios::binary);
    at::Tensor c = frames.contiguous();
    f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  } else {
    fail(path + ": --out takes .npy, .rgb or .y4m");
  }
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(q / 100.0 * v.size())) - 1;
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv);
  if (args.threads > 0) at::set_num_threads(static_cast<int>(args.threads));
  Shapes shapes = read_shapes(args.packages);
  const at::Device device = pick_device(shapes, args.packages);
  const bool cuda = device.is_cuda();
  const int64_t B = shapes.dims["batch"][0][0], g = shapes.dims["grid"][0][0];
  const auto& frame = shapes.dims["frame"][0];

  Loader encode(args.packages + "/encode.pt2"), step(args.packages + "/step.pt2"),
      decode(args.packages + "/decode.pt2");

  // Context: frames to encode, or tokens as they are.
  std::string ctx_path = args.context.empty() ? args.packages + "/context.npy" : args.context;
  at::Tensor ctx = ochre::npy::load(ctx_path);
  at::Tensor tokens;
  if (ctx.scalar_type() == at::kByte && ctx.sizes() == at::IntArrayRef({B, frame[0], frame[1], frame[2]})) {
    tokens = encode.run({ctx.to(device)})[0];
  } else if (ctx.scalar_type() == at::kLong && ctx.sizes() == at::IntArrayRef({B, g, g})) {
    tokens = ctx.to(device);
  } else {
    std::ostringstream want;
    want << "uint8 (" << B << ", " << frame[0] << ", " << frame[1] << ", " << frame[2] << ") frames or int64 (" << B
         << ", " << g << ", " << g << ") tokens";
    fail(ctx_path + ": expected " + want.str() + ", got " + c10::toString(ctx.scalar_type()) + " " +
         c10::str(ctx.sizes()));
  }

  at::Tensor actions = args.actions.empty() ? at::zeros({args.steps > 0 ? args.steps : 64, 4})
                                            : read_actions(args.actions);
  const int64_t S = args.steps > 0 ? args.steps : actions.size(0);

  // State and noise at the packages' static shapes; the outputs of each step replace them.
  std::vector<at::Tensor> state;
  for (const auto& s : shapes.dims["state"]) {  // (B, C, h, w) per layer, then (B, 3): the view the codes owe
    std::vector<int64_t> dims{B};
    dims.insert(dims.end(), s.begin(), s.end());
    state.push_back(at::zeros(dims, at::TensorOptions().device(device)));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(args.seed));

  // The decoder renders the codes moved by the view (the state's last tensor): zero at the start.
  // Frames and tokens come back to the host as they are made (on a GPU, the copy is the step's sync).
  std::vector<at::Tensor> frames = {decode.run({tokens, state.back()})[0].to(at::kCPU)},
                          token_seq = {tokens.to(at::kCPU)};
  std::vector<double> step_ms, decode_ms;
  for (int64_t t = 0; t < S; ++t) {
    at::Tensor a = actions[t % actions.size(0)].expand({B, 4}).contiguous().to(device);
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor noise = at::rand({B, g, g}, gen).to(device);
    std::vector<at::Tensor> inputs = {tokens, a, noise};
    inputs.insert(inputs.end(), state.begin(), state.end());
    std::vector<at::Tensor> out = step.run(inputs);  // next tokens, next state ...
    if (cuda) torch::cuda::synchronize();           // the step's own time, not its launch's
    auto t1 = std::chrono::steady_clock::now();
    tokens = out[0];
    std::copy(out.begin() + 1, out.end(), state.begin());
    frames.push_back(decode.run({tokens, state.back()})[0].to(at::kCPU));
    auto t2 = std::chrono::steady_clock::now();
    token_seq.push_back(tokens.to(at::kCPU));
    step_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    decode_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }

  if (!args.out.empty()) write_frames(args.out, at::stack(frames));
  if (!args.tokens_out.empty()) ochre::npy::save(args.tokens_out, at::stack(token_seq));

  std::vector<double> total;
  for (size_t i = static_cast<size_t>(std::min<int64_t>(args.warmup, S - 1)); i < step_ms.size(); ++i)
    total.push_back(step_ms[i] + decode_ms[i]);
  if (total.empty()) {
    std::printf("ochre-native: 0 steps run\n");
    return 0;
  }
  double p50 = percentile(total, 50), p99 = percentile(total, 99);
  std::printf(
      "ochre-native: %lld steps at batch %lld on %s (%d threads): step+decode p50 %.3f ms, p99 %.3f ms "
      "(step p50 %.3f, decode p50 %.3f); %.1f frames/s\n",
      static_cast<long long>(S), static_cast<long long>(B), cuda ? "cuda" : "cpu", at::get_num_threads(), p50, p99,
      percentile(std::vector<double>(step_ms.begin() + (step_ms.size() - total.size()), step_ms.end()), 50),
      percentile(std::vector<double>(decode_ms.begin() + (decode_ms.size() - total.size()), decode_ms.end()), 50),
      1000.0 * B / p50);
  return 0;
}
