"""The names the command line offers, each defined once: the modules that own the behaviour take
their lists from here, and `ochre --help` reads them without importing torch."""

WORLDS = ("synth", "luanti")                 # where `ochre demo` gets its recordings (ochre.demo)
LAYOUTS = ("minerl", "vpt")                  # recording layouts `ochre synth` writes (ochre.data.synth)
ENGINES = ("local", "ray")                   # where the data stages' work runs (ochre.parallel, ochre.cluster)
CROPS = ("center", "squash")                 # how a non-square source becomes square (ochre.data.video)
PRESETS = ("tiny", "base")                   # model sizes (DynamicsConfig, recipes)
TOKENIZER_PRESETS = ("tiny", "small", "base")   # tokenizer sizes (TokenizerConfig)
RECIPES = ("ochre", "seed-v3", "blind")      # world-model training recipes (ochre.train.world)
UNROLL_FEEDS = ("sample", "decoding", "argmax")   # what a training unroll feeds back (ochre.train.world)
GUIDES = ("all", "head")                     # what action guidance extrapolates (ochre.models.sampling)
COMPARE = ("seed-v3",)                       # recipes `ochre demo --compare` trains beside ochre
IMPLS = ("auto", "triton", "torch")          # fused-kernel implementations (ochre.kernels)
BACKENDS = ("torch", "compiled", "onnxruntime", "tensorrt", "native")   # ochre.runtime.stepper
EXPORT_FORMATS = ("onnx", "tensorrt", "aoti")                           # ochre.export.cli
PRECISIONS = ("fp32", "fp16", "bf16")        # convolution/linear precisions (ochre.models.precision)
ONNX_PRECISIONS = ("fp32", "fp16")           # what ONNX exports take (TensorRT's fp16 engines)
CPU_PRECISIONS = ("fp32", "bf16")            # what the CPU backends run: AOTInductor packages, torch, eval
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")  # what a train step runs in (ochre.device.train_precision)
