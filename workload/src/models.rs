//! The networks of the paper (and a small CPU one), each built from a serializable [`ModelSpec`]
//! that a recording stores so the analyzer can rebuild the identical model.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::error::WorkloadError;
use crate::jit::ScriptModule;
use crate::state::StateLayout;

/// A model description: name plus configuration. Stored verbatim (JSON) in recordings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Fully connected net; with `batch_norm` each hidden layer is Linear, BatchNorm1d, ReLU
    /// (the paper's MNIST net is 784-500-350-10 with BatchNorm).
    Mlp {
        input_features: i64,
        hidden: Vec<i64>,
        classes: i64,
        batch_norm: bool,
    },
    /// VGG-11 ("A") with BatchNorm after every conv; head 512-512-512-classes, no dropout.
    Vgg11Bn { in_channels: i64, classes: i64 },
    /// Pre-activation ResNet for 32x32 inputs with `depth = 6n + 2` (20, 56, ...), widths 16/32/64.
    PreactResnet {
        depth: i64,
        in_channels: i64,
        classes: i64,
    },
    /// Two conv+BN+ReLU+max-pool stages and a small head: trains in seconds on a CPU.
    SmallCnn {
        in_channels: i64,
        image_size: i64,
        classes: i64,
    },
    /// A TorchScript module saved from PyTorch (`--model torchscript:PATH`). Its bytes travel
    /// with the recording (see [`Model::load`]); θ_0 is the module's saved tensors, under
    /// PyTorch's own names.
    #[serde(rename = "torchscript")]
    TorchScript {
        /// File name the module was recorded from (informative).
        file_name: String,
        /// sha256 of the module file's bytes (hex).
        sha256: String,
        len_bytes: u64,
        /// Output width of the module: the dataset's classes.
        classes: i64,
    },
}

impl ModelSpec {
    /// The paper's MNIST MLP: 784-500-350-10 with BatchNorm1d, 573,060 parameters.
    pub fn paper_mlp() -> Self {
        ModelSpec::Mlp {
            input_features: 784,
            hidden: vec![500, 350],
            classes: 10,
            batch_norm: true,
        }
    }

    /// VGG-11 with BatchNorm for CIFAR-10: 9,756,426 parameters.
    pub fn vgg11() -> Self {
        ModelSpec::Vgg11Bn {
            in_channels: 3,
            classes: 10,
        }
    }

    /// Pre-activation ResNet-56 for CIFAR-10: 855,578 parameters.
    pub fn resnet56() -> Self {
        ModelSpec::PreactResnet {
            depth: 56,
            in_channels: 3,
            classes: 10,
        }
    }

    /// Pre-activation ResNet-20 for CIFAR-10.
    pub fn resnet20() -> Self {
        ModelSpec::PreactResnet {
            depth: 20,
            in_channels: 3,
            classes: 10,
        }
    }

    /// The small CNN for 28x28 grey images (tests, quickstart).
    pub fn small_cnn() -> Self {
        ModelSpec::SmallCnn {
            in_channels: 1,
            image_size: 28,
            classes: 10,
        }
    }

    /// Looks up a model by its command-line name for inputs of `channels` x `image_size`^2.
    pub fn from_name(name: &str, channels: i64, image_size: i64) -> Result<Self, WorkloadError> {
        let spec = match name {
            "mlp" => ModelSpec::Mlp {
                input_features: channels * image_size * image_size,
                hidden: vec![500, 350],
                classes: 10,
                batch_norm: true,
            },
            "vgg11" => ModelSpec::Vgg11Bn {
                in_channels: channels,
                classes: 10,
            },
            "resnet20" | "resnet56" => ModelSpec::PreactResnet {
                depth: if name == "resnet20" { 20 } else { 56 },
                in_channels: channels,
                classes: 10,
            },
            "small-cnn" => ModelSpec::SmallCnn {
                in_channels: channels,
                image_size,
                classes: 10,
            },
            other => {
                return Err(WorkloadError::UnknownModel {
                    name: other.to_string(),
                });
            }
        };
        Ok(spec)
    }

    /// Names accepted by [`ModelSpec::from_name`].
    pub const NAMES: [&'static str; 5] = ["mlp", "small-cnn", "vgg11", "resnet20", "resnet56"];

    /// Short name used in tables and file names.
    pub fn short_name(&self) -> String {
        match self {
            ModelSpec::Mlp { .. } => "mlp".to_string(),
            ModelSpec::Vgg11Bn { .. } => "vgg11".to_string(),
            ModelSpec::PreactResnet { depth, .. } => format!("resnet{depth}"),
            ModelSpec::SmallCnn { .. } => "small-cnn".to_string(),
            ModelSpec::TorchScript { file_name, .. } => {
                let stem = file_name
                    .rsplit_once('.')
                    .map_or(file_name.as_str(), |(s, _)| s);
                format!("torchscript-{stem}")
            }
        }
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |reason: &str| {
            Err(WorkloadError::InvalidModel {
                spec: format!("{self:?}"),
                reason: reason.to_string(),
            })
        };
        match self {
            ModelSpec::Mlp {
                input_features,
                hidden,
                classes,
                ..
            } => {
                if *input_features <= 0 || *classes <= 0 || hidden.iter().any(|h| *h <= 0) {
                    return bad("layer widths must be positive");
                }
            }
            ModelSpec::Vgg11Bn {
                in_channels,
                classes,
            } => {
                if *in_channels <= 0 || *classes <= 0 {
                    return bad("channels and classes must be positive");
                }
            }
            ModelSpec::PreactResnet {
                depth,
                in_channels,
                classes,
            } => {
                if *depth < 8 || (depth - 2) % 6 != 0 {
                    return bad("depth must be 6n+2 with n >= 1 (20, 56, 110, ...)");
                }
                if *in_channels <= 0 || *classes <= 0 {
                    return bad("channels and classes must be positive");
                }
            }
            ModelSpec::SmallCnn {
                in_channels,
                image_size,
                classes,
            } => {
                if *in_channels <= 0 || *classes <= 0 || *image_size < 4 || image_size % 4 != 0 {
                    return bad("image size must be a positive multiple of 4");
                }
            }
            ModelSpec::TorchScript { classes, .. } => {
                if *classes <= 0 {
                    return bad("classes must be positive");
                }
            }
        }
        Ok(())
    }
}

/// Seeds libtorch's process-wide generator and holds it for the caller's draws: two threads
/// that seed and draw at once (tests, an embedding program) would otherwise mix their streams.
pub fn seeded_generator(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    guard
}

/// Name of the attachment that holds a TorchScript module's file inside a recording.
pub const MODULE_ATTACHMENT: &str = "model.pt";

/// What computes the logits: a network built by tch from its description, or a TorchScript
/// module.
enum Net {
    Builtin {
        /// Owns every parameter and BatchNorm buffer.
        _vs: nn::VarStore,
        net: Box<dyn ModuleT>,
        flatten_input: bool,
    },
    Script {
        module: ScriptModule,
        /// The mode last set on the module (setting it walks every submodule).
        train: Cell<Option<bool>>,
    },
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Net::Builtin { .. } => f.write_str("Builtin"),
            Net::Script { module, .. } => write!(f, "Script({:?})", module.device()),
        }
    }
}

/// A built network with its tensors in canonical order (see [`StateLayout`]).
#[derive(Debug)]
pub struct Model {
    net: Net,
    /// Every parameter and buffer, in layout order, aliasing the network's own tensors.
    tensors: Vec<Tensor>,
    spec: ModelSpec,
    layout: StateLayout,
    device: Device,
}

impl Model {
    /// Builds a built-in network on `device`, initialised from libtorch's generator seeded
    /// with `init_seed` (so the same seed gives the same θ_0 on the same machine). A
    /// TorchScript description needs its module's bytes: use [`Model::load`].
    pub fn new(spec: &ModelSpec, device: Device, init_seed: u64) -> Result<Self, WorkloadError> {
        Self::load(spec, device, init_seed, None)
    }

    /// Builds the model of `spec`: a built-in network (as [`Model::new`]), or the TorchScript
    /// module in `module_bytes`, whose sha256 must equal the description's.
    pub fn load(
        spec: &ModelSpec,
        device: Device,
        init_seed: u64,
        module_bytes: Option<&[u8]>,
    ) -> Result<Self, WorkloadError> {
        spec.validate()?;
        if let ModelSpec::TorchScript {
            file_name, sha256, ..
        } = spec
        {
            let bytes = module_bytes.ok_or_else(|| WorkloadError::TorchScript {
                what: file_name.clone(),
                reason: "the module's bytes are missing".into(),
            })?;
            let found = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
            if &found != sha256 {
                return Err(WorkloadError::TorchScript {
                    what: file_name.clone(),
                    reason: format!(
                        "module bytes have sha256 {found}, the run description says {sha256}"
                    ),
                });
            }
            return Self::from_script(spec.clone(), ScriptModule::load(bytes, device)?, file_name);
        }
        // libtorch's generator is global: seeding right before construction makes θ_0 a
        // function of the seed alone, as long as no other thread draws in between.
        let _seeded = seeded_generator(init_seed);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (net, flatten_input): (Box<dyn ModuleT>, bool) = match spec {
            ModelSpec::Mlp {
                input_features,
                hidden,
                classes,
                batch_norm,
            } => (
                Box::new(mlp(&root, *input_features, hidden, *classes, *batch_norm)),
                true,
            ),
            ModelSpec::Vgg11Bn {
                in_channels,
                classes,
            } => (Box::new(vgg11_bn(&root, *in_channels, *classes)), false),
            ModelSpec::PreactResnet {
                depth,
                in_channels,
                classes,
            } => (
                Box::new(PreactResnet::new(&root, *depth, *in_channels, *classes)),
                false,
            ),
            ModelSpec::SmallCnn {
                in_channels,
                image_size,
                classes,
            } => (
                Box::new(small_cnn(&root, *in_channels, *image_size, *classes)),
                false,
            ),
            // Handled above; kept as an error rather than a panic.
            ModelSpec::TorchScript { file_name, .. } => {
                return Err(WorkloadError::TorchScript {
                    what: file_name.clone(),
                    reason: "not a built-in network".into(),
                });
            }
        };
        let named = vs.variables().into_iter().map(|(n, t)| {
            let trainable = t.requires_grad();
            (n, t, trainable)
        });
        let (layout, tensors) = StateLayout::from_named_tensors(named, &spec.short_name())?;
        Ok(Model {
            net: Net::Builtin {
                _vs: vs,
                net,
                flatten_input,
            },
            tensors,
            spec: spec.clone(),
            layout,
            device,
        })
    }

    /// A model around a loaded TorchScript module: its parameters (trainable when they require
    /// gradients) and buffers, checked to be something a recording can hold.
    fn from_script(
        spec: ModelSpec,
        module: ScriptModule,
        file_name: &str,
    ) -> Result<Self, WorkloadError> {
        let device = module.device();
        let mut named: Vec<(String, Tensor, bool)> = Vec::new();
        for (name, t) in module.named_parameters()? {
            let trainable = t.requires_grad();
            named.push((name, t, trainable));
        }
        for (name, t) in module.named_buffers()? {
            named.push((name, t, false));
        }
        if !named.iter().any(|(_, _, trainable)| *trainable) {
            return Err(WorkloadError::NoTrainableParameters {
                module: file_name.to_string(),
            });
        }
        let (layout, tensors) = StateLayout::from_named_tensors(named, file_name)?;
        Ok(Model {
            net: Net::Script {
                module,
                train: Cell::new(None),
            },
            tensors,
            spec,
            layout,
            device,
        })
    }

    /// The description this model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Canonical order of parameters and buffers.
    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    /// Every parameter and buffer in canonical order (aliases: writing them changes the model).
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// Device the variables live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of trainable parameters (BatchNorm running statistics excluded).
    pub fn parameter_count(&self) -> usize {
        self.layout.parameter_count()
    }

    /// Logits for a batch of inputs (`[N, C, H, W]` images or `[N, ...]` tensors). `train`
    /// selects BatchNorm batch statistics (and then updates the running statistics, as in
    /// training) and, for TorchScript modules, the module's train/eval mode.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor, WorkloadError> {
        match &self.net {
            Net::Builtin {
                net, flatten_input, ..
            } => Ok(if *flatten_input {
                net.forward_t(&images.f_flatten(1, -1)?, train)
            } else {
                net.forward_t(images, train)
            }),
            Net::Script {
                module,
                train: mode,
            } => {
                if mode.get() != Some(train) {
                    module.set_train(train)?;
                    mode.set(Some(train));
                }
                module.forward(images)
            }
        }
    }

    /// The TorchScript module, for a model loaded from one.
    pub fn script_module(&self) -> Option<&ScriptModule> {
        match &self.net {
            Net::Script { module, .. } => Some(module),
            Net::Builtin { .. } => None,
        }
    }

    /// θ in canonical order as one f32-word vector (copied to the host).
    pub fn flatten(&self) -> Result<Vec<f32>, WorkloadError> {
        self.layout.flatten(&self.tensors)
    }

    /// θ in canonical order as one flat tensor on the model's device (a copy).
    pub fn concat(&self) -> Result<Tensor, WorkloadError> {
        tch::no_grad(|| self.layout.concat(&self.tensors))
    }

    /// Writes θ in canonical order into `out`, a flat f32 tensor of the state's length on the
    /// model's device (a preallocated snapshot buffer: no allocation of the state's size).
    pub fn concat_into(&self, out: &Tensor) -> Result<(), WorkloadError> {
        tch::no_grad(|| self.layout.concat_into(&self.tensors, out))
    }

    /// Loads θ (canonical order) into the variables.
    pub fn load_flat(&self, state: &[f32]) -> Result<(), WorkloadError> {
        self.layout.unflatten(&self.tensors, state)
    }
}

fn mlp(p: &nn::Path<'_>, input: i64, hidden: &[i64], classes: i64, bn: bool) -> nn::SequentialT {
    let mut seq = nn::seq_t();
    let mut width = input;
    for (i, h) in hidden.iter().enumerate() {
        seq = seq.add(nn::linear(
            p / format!("fc{i}"),
            width,
            *h,
            Default::default(),
        ));
        if bn {
            // PyTorch 0.3 (the paper's code) drew BatchNorm1d's gamma from U(0, 1).
            let cfg = nn::BatchNormConfig {
                ws_init: nn::Init::Uniform { lo: 0.0, up: 1.0 },
                ..Default::default()
            };
            seq = seq.add(nn::batch_norm1d(p / format!("bn{i}"), *h, cfg));
        }
        seq = seq.add_fn(|x| x.relu());
        width = *h;
    }
    seq.add(nn::linear(p / "out", width, classes, Default::default()))
}

/// He init as the paper's code: N(0, 2 / (k*k*out_channels)), bias zero.
fn he_conv(p: nn::Path<'_>, cin: i64, cout: i64, k: i64, stride: i64, bias: bool) -> nn::Conv2D {
    let stdev = (2.0 / (k * k * cout) as f64).sqrt();
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias,
        ws_init: nn::Init::Randn { mean: 0.0, stdev },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn bn2d(p: nn::Path<'_>, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, channels, Default::default())
}

fn vgg11_bn(p: &nn::Path<'_>, in_channels: i64, classes: i64) -> nn::SequentialT {
    const CFG: [i64; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
    let features = p / "features";
    let mut seq = nn::seq_t();
    let mut cin = in_channels;
    let mut layer = 0;
    for c in CFG {
        if c == 0 {
            seq = seq.add_fn(|x| x.max_pool2d_default(2));
        } else {
            seq = seq.add(he_conv(
                &features / format!("conv{layer}"),
                cin,
                c,
                3,
                1,
                true,
            ));
            seq = seq.add(bn2d(&features / format!("bn{layer}"), c));
            seq = seq.add_fn(|x| x.relu());
            cin = c;
            layer += 1;
        }
    }
    let head = p / "classifier";
    seq.add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(&head / "fc0", 512, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&head / "fc1", 512, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&head / "fc2", 512, classes, Default::default()))
}

fn small_cnn(p: &nn::Path<'_>, in_channels: i64, image_size: i64, classes: i64) -> nn::SequentialT {
    let side = image_size / 4;
    nn::seq_t()
        .add(he_conv(p / "conv0", in_channels, 8, 3, 1, true))
        .add(bn2d(p / "bn0", 8))
        .add_fn(|x| x.relu().max_pool2d_default(2))
        .add(he_conv(p / "conv1", 8, 16, 3, 1, true))
        .add(bn2d(p / "bn1", 16))
        .add_fn(|x| x.relu().max_pool2d_default(2))
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(
            p / "fc0",
            16 * side * side,
            32,
            Default::default(),
        ))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "fc1", 32, classes, Default::default()))
}

/// Pre-activation basic block: BN, ReLU, conv(stride), BN, ReLU, conv, plus a shortcut that is
/// the identity or a 1x1 strided conv without BN.
#[derive(Debug)]
struct PreactBlock {
    bn0: nn::BatchNorm,
    conv0: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
}

impl ModuleT for PreactBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = self.bn0.forward_t(xs, train).relu();
        let skip = match &self.shortcut {
            Some(conv) => out.apply(conv),
            None => xs.shallow_clone(),
        };
        let out = out.apply(&self.conv0);
        let out = self.bn1.forward_t(&out, train).relu().apply(&self.conv1);
        out + skip
    }
}

#[derive(Debug)]
struct PreactResnet {
    stem: nn::Conv2D,
    blocks: Vec<PreactBlock>,
    bn: nn::BatchNorm,
    fc: nn::Linear,
}

impl PreactResnet {
    fn new(p: &nn::Path<'_>, depth: i64, in_channels: i64, classes: i64) -> Self {
        let n = (depth - 2) / 6;
        let stem = he_conv(p / "stem", in_channels, 16, 3, 1, false);
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (stage, width) in [16_i64, 32, 64].into_iter().enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let bp = p / format!("stage{stage}") / format!("block{b}");
                let shortcut = (stride != 1 || cin != width)
                    .then(|| he_conv(&bp / "shortcut", cin, width, 1, stride, false));
                blocks.push(PreactBlock {
                    bn0: bn2d(&bp / "bn0", cin),
                    conv0: he_conv(&bp / "conv0", cin, width, 3, stride, false),
                    bn1: bn2d(&bp / "bn1", width),
                    conv1: he_conv(&bp / "conv1", width, width, 3, 1, false),
                    shortcut,
                });
                cin = width;
            }
        }
        PreactResnet {
            stem,
            blocks,
            bn: bn2d(p / "bn", 64),
            fc: nn::linear(p / "fc", 64, classes, Default::default()),
        }
    }
}

impl ModuleT for PreactResnet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut out = xs.apply(&self.stem);
        for block in &self.blocks {
            out = block.forward_t(&out, train);
        }
        let out = self.bn.forward_t(&out, train).relu();
        // Global average pool (AvgPool 8 on 32x32 inputs in the paper's code).
        out.adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .apply(&self.fc)
    }
}
