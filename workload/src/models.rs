//! The networks of the paper (and a small CPU one), each built from a serializable [`ModelSpec`]
//! that a recording stores so the analyzer can rebuild the identical model.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::error::WorkloadError;
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
        }
        Ok(())
    }
}

/// A built network with its variables, in canonical order (see [`StateLayout`]).
#[derive(Debug)]
pub struct Model {
    /// Holds every parameter and BatchNorm buffer.
    pub vs: nn::VarStore,
    net: Box<dyn ModuleT>,
    spec: ModelSpec,
    layout: StateLayout,
    flatten_input: bool,
}

impl Model {
    /// Builds the network on `device`, initialised from libtorch's generator seeded with
    /// `init_seed` (so the same seed gives the same θ_0 on the same machine).
    pub fn new(spec: &ModelSpec, device: Device, init_seed: u64) -> Result<Self, WorkloadError> {
        spec.validate()?;
        // libtorch's generator is global: seeding right before construction makes θ_0 a
        // function of the seed alone.
        tch::manual_seed(init_seed as i64);
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
        };
        let layout = StateLayout::of(&vs);
        Ok(Model {
            vs,
            net,
            spec: spec.clone(),
            layout,
            flatten_input,
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

    /// Device the variables live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Number of trainable parameters (BatchNorm running statistics excluded).
    pub fn parameter_count(&self) -> usize {
        self.layout.parameter_count()
    }

    /// Logits for a batch of images `[N, C, H, W]`. `train` selects BatchNorm batch statistics
    /// (and then updates the running statistics, as in training).
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        if self.flatten_input {
            self.net.forward_t(&images.flatten(1, -1), train)
        } else {
            self.net.forward_t(images, train)
        }
    }

    /// θ in canonical order as one f32 vector (copied to the host).
    pub fn flatten(&self) -> Result<Vec<f32>, WorkloadError> {
        self.layout.flatten(&self.vs)
    }

    /// Loads θ (canonical order) into the variables.
    pub fn load_flat(&self, state: &[f32]) -> Result<(), WorkloadError> {
        self.layout.unflatten(&self.vs, state)
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
