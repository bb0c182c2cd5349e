//! Portability without the hardware: every shader module the program builds, at every value of its `override`
//! constants the program uses, translated for each entry point by naga's back ends for the platforms wgpu targets
//! (SPIR-V for Vulkan, MSL for Metal, HLSL for DX12, GLSL for GL), with the options wgpu-hal gives them. The SPIR-V
//! is then checked by `spirv-val` (Debian's `spirv-tools`) for the Vulkan versions it targets, and the GLSL
//! compiled by `glslangValidator` (`glslang-tools`). No GPU needed. MSL and HLSL are only translated: their
//! compilers (Xcode's, DXC/FXC) do not run here.
//!
//! A failure names the shader family, the entry point, the override values, the back end and naga's (or
//! spirv-val's) message.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ResourceBinding, ShaderStage, StorageAccess};
use vae_wgpu::gpu::pipeline::{
    ShaderSource as Family, capabilities as program_capabilities, validate,
};
use vae_wgpu::kernels::matmul::Kernel;
use vae_wgpu::kernels::{FAMILIES, program_features};

/// The values the program gives each pipeline-overridable constant: `Layout::code` and `Epilogue::code` in
/// src/kernels/matmul.rs, `grad` in src/kernels/loss.rs, `binarize` in src/kernels/gather.rs. Every combination
/// is checked; an override missing here fails the test.
const OVERRIDE_VALUES: &[(&str, &[f64])] = &[
    ("LAYOUT", &[0.0, 1.0, 2.0]),
    ("EPILOGUE", &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    // Pairs: a layer's input gradient (NN) with the ReLU mask or the KL epilogue, beside its weight gradient.
    ("PAIRED", &[0.0, 1.0]),
    ("LAYOUT2", &[1.0]),
    ("EPILOGUE2", &[3.0, 5.0]),
    ("GRAD", &[0.0, 1.0]),
    ("BINARIZE", &[0.0, 1.0]),
];

/// What wgpu-core validates a shader module with on the device src/gpu.rs opens: the features it may request
/// (timestamp queries for `vae profile`, else none) on a fully compliant downlevel device. Not
/// `Capabilities::all()`: a shader that needs more than that would fail on a real device.
fn capabilities() -> Capabilities {
    wgpu_naga_bridge::features_to_naga_capabilities(
        program_features(),
        wgpu::DownlevelCapabilities::default().flags,
    )
}

/// The validator wgpu-core builds for such a device: with subgroups, the compute stage and every operation.
fn validator() -> Validator {
    let mut v = Validator::new(ValidationFlags::all(), capabilities());
    if capabilities().contains(Capabilities::SUBGROUP) {
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
    }
    v
}

/// One pipeline the program can build: an entry point of a family with its override values resolved.
struct Variant {
    family: &'static str,
    entry: String,
    stage: ShaderStage,
    overrides: String,
    module: Module,
    info: ModuleInfo,
}

impl Variant {
    fn name(&self) -> String {
        format!("{}::{} [{}]", self.family, self.entry, self.overrides)
    }

    /// A file name unique to this variant.
    fn file_stem(&self) -> String {
        let values: String = self
            .overrides
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        format!("{}-{}-{values}", self.family, self.entry)
    }
}

/// Parses and validates a family as wgpu-core does (naga's WGSL front end and validator with [`capabilities`]).
fn parse(family: &Family) -> Result<(Module, ModuleInfo), String> {
    // First the crate's own check, whose errors name file and line.
    validate(family, program_capabilities(program_features()))
        .map_err(|e| format!("{}: does not validate: {e}", family.name))?;
    let source = family.source();
    let located = |loc: Option<naga::SourceLocation>, message: String| {
        let (file, line) = family.locate(loc.map_or(1, |l| l.line_number));
        format!(
            "{}: {file}:{line}: rejected with the device's capabilities {:?}: {message}",
            family.name,
            capabilities()
        )
    };
    let mut options = naga::front::wgsl::Options::new();
    options.capabilities = capabilities();
    let module = naga::front::wgsl::Frontend::new_with_options(options)
        .parse(&source)
        .map_err(|e| located(e.location(&source), e.emit_to_string(&source)))?;
    let info = validator()
        .validate(&module)
        .map_err(|e| located(e.location(&source), e.emit_to_string(&source)))?;
    Ok((module, info))
}

/// Every entry point of every family at every combination of override values, or the reasons some could not be
/// built.
fn variants() -> &'static Result<Vec<Variant>, Vec<String>> {
    static VARIANTS: OnceLock<Result<Vec<Variant>, Vec<String>>> = OnceLock::new();
    VARIANTS.get_or_init(|| {
        let mut variants = Vec::new();
        let mut failures = Vec::new();
        for family in FAMILIES {
            let (module, info) = match parse(family) {
                Ok(parsed) => parsed,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            // The matmul candidates' own constants (tile sizes, slices), each set as the program gives it; then
            // the cartesian product of the values of the module's other overrides.
            let mut combinations: Vec<Vec<(&str, f64)>> = Kernel::CANDIDATES
                .iter()
                .filter_map(|k| {
                    let (m, _, constants) = k.pipeline();
                    (m.name == family.name && !constants.is_empty()).then_some(constants)
                })
                .collect();
            if combinations.is_empty() {
                combinations.push(vec![]);
            }
            let fixed: Vec<&str> = combinations[0].iter().map(|(n, _)| *n).collect();
            for (_, o) in module.overrides.iter() {
                let name = o.name.as_deref().unwrap_or("(unnamed)");
                if fixed.contains(&name) {
                    continue;
                }
                let Some((_, values)) = OVERRIDE_VALUES.iter().find(|(n, _)| *n == name) else {
                    failures.push(format!(
                        "{}: override {name} has no values in OVERRIDE_VALUES (tests/portability.rs): \
                         add the values the program gives it",
                        family.name
                    ));
                    continue;
                };
                combinations = combinations
                    .into_iter()
                    .flat_map(|c| {
                        values.iter().map(move |&v| {
                            let mut c = c.clone();
                            c.push((name, v));
                            c
                        })
                    })
                    .collect();
            }
            for ep in &module.entry_points {
                for combination in &combinations {
                    let mut constants = naga::back::PipelineConstants::default();
                    let mut overrides = Vec::new();
                    for &(name, value) in combination {
                        constants.insert(name.to_string(), value);
                        overrides.push(format!("{name}={value}"));
                    }
                    let overrides = if overrides.is_empty() {
                        "no overrides".to_string()
                    } else {
                        overrides.join(", ")
                    };
                    match naga::back::pipeline_constants::process_overrides(
                        &module,
                        &info,
                        Some((ep.stage, &ep.name)),
                        &constants,
                    ) {
                        Ok((m, i)) => variants.push(Variant {
                            family: family.name,
                            entry: ep.name.clone(),
                            stage: ep.stage,
                            overrides,
                            module: m.into_owned(),
                            info: i.into_owned(),
                        }),
                        Err(e) => failures.push(format!(
                            "{}::{} [{overrides}], resolving overrides: {}",
                            family.name,
                            ep.name,
                            chain(&e)
                        )),
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(variants)
        } else {
            Err(failures)
        }
    })
}

fn all_variants() -> &'static [Variant] {
    match variants() {
        Ok(v) => v,
        Err(failures) => panic!(
            "{} shader variants could not be built:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ),
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The resource bindings of a module in (group, binding) order, with whether each is a uniform buffer and
/// whether it is written: the program's layouts are group 0 (binding 0 uniform, then storage) and group 1 (the
/// step table, a uniform buffer).
fn bindings(module: &Module) -> Vec<(ResourceBinding, bool, bool)> {
    let mut list: Vec<_> = module
        .global_variables
        .iter()
        .filter_map(|(_, g)| {
            let binding = g.binding?;
            let (uniform, writable) = match g.space {
                AddressSpace::Uniform => (true, false),
                AddressSpace::Storage { access } => (false, access.contains(StorageAccess::STORE)),
                other => panic!("binding {binding:?} in address space {other:?}: not a buffer"),
            };
            Some((binding, uniform, writable))
        })
        .collect();
    list.sort_by_key(|(b, _, _)| (b.group, b.binding));
    list
}

/// The back ends, each with the options wgpu-hal 30 uses, at the oldest and newest language versions a device
/// may get. Returns the translated text (SPIR-V as words) or naga's error.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// Vulkan 1.0 devices get SPIR-V 1.0, Vulkan 1.3 devices (lavapipe, SwiftShader, current GPU drivers) 1.6;
    /// `debug`: with `InstanceFlags::DEBUG` (debug builds, WGPU_DEBUG=1) the module carries its WGSL source.
    Spirv {
        version: (u8, u8),
        debug: bool,
    },
    Msl((u8, u8)),
    Hlsl(hlsl::ShaderModel),
    Glsl(glsl::Version),
}

const BACKENDS: &[Backend] = &[
    Backend::Spirv {
        version: (1, 0),
        debug: false,
    },
    Backend::Spirv {
        version: (1, 6),
        debug: false,
    },
    Backend::Spirv {
        version: (1, 6),
        debug: true,
    },
    Backend::Msl((2, 0)),
    Backend::Msl((3, 2)),
    Backend::Hlsl(hlsl::ShaderModel::V5_1),
    Backend::Hlsl(hlsl::ShaderModel::V6_0),
    Backend::Glsl(glsl::Version::Embedded {
        version: 310,
        is_webgl: false,
    }),
    Backend::Glsl(glsl::Version::Desktop(430)),
];

impl Backend {
    /// Whether a device on this back end can have wgpu's SUBGROUP feature, the only devices that build the
    /// subgroup families: Vulkan 1.1+ (SPIR-V 1.3+), Metal with MSL 2.1+, D3D12 with shader model 6.0+; not GL.
    fn has_subgroups(self) -> bool {
        match self {
            Backend::Spirv { version, .. } => version >= (1, 3),
            Backend::Msl(version) => version >= (2, 1),
            Backend::Hlsl(model) => model >= hlsl::ShaderModel::V6_0,
            Backend::Glsl(_) => false,
        }
    }
}

/// The pairs of a variant and a back end that a device can meet: a subgroup family only where subgroups exist.
fn applies(v: &Variant, b: &Backend) -> bool {
    !v.family.ends_with("_subgroup") || b.has_subgroups()
}

enum Output {
    Words(Vec<u32>),
    Text(String),
}

impl Backend {
    fn name(self) -> String {
        match self {
            Backend::Spirv { version, debug } => format!(
                "SPIR-V {}.{}{}",
                version.0,
                version.1,
                if debug { " with debug info" } else { "" }
            ),
            Backend::Msl(v) => format!("MSL {}.{}", v.0, v.1),
            Backend::Hlsl(sm) => format!("HLSL {sm:?}"),
            Backend::Glsl(v) => format!("GLSL {v}"),
        }
    }

    /// The Vulkan environment `spirv-val` checks a SPIR-V version against. Not the module with debug info: naga
    /// names its source language WGSL (OpSource 10, in the SPIR-V registry since 2023), which Debian 12's
    /// SPIRV-Tools 2023.1 predates and rejects as "Invalid source language operand: 10".
    fn vulkan_env(self) -> Option<&'static str> {
        match self {
            Backend::Spirv { debug: true, .. } => None,
            Backend::Spirv {
                version: (1, 0), ..
            } => Some("vulkan1.0"),
            Backend::Spirv { .. } => Some("vulkan1.3"),
            _ => None,
        }
    }

    /// Whether the back end writes GLSL, which `glslangValidator` compiles.
    fn is_glsl(self) -> bool {
        matches!(self, Backend::Glsl(_))
    }

    fn translate(self, v: &Variant, source: &str) -> Result<Output, String> {
        match self {
            Backend::Spirv { version, debug } => spirv(v, version, debug.then_some(source)),
            Backend::Msl(version) => metal(v, version),
            Backend::Hlsl(model) => hlsl(v, model),
            Backend::Glsl(version) => gl(v, version),
        }
    }
}

fn spirv(v: &Variant, lang_version: (u8, u8), source: Option<&str>) -> Result<Output, String> {
    // The capabilities wgpu-hal's Vulkan device always allows (plus what a compliant downlevel device adds).
    let capabilities = [
        spv::Capability::Shader,
        spv::Capability::Matrix,
        spv::Capability::Sampled1D,
        spv::Capability::Image1D,
        spv::Capability::ImageQuery,
        spv::Capability::DerivativeControl,
        spv::Capability::StorageImageExtendedFormats,
        spv::Capability::SampledCubeArray,
        spv::Capability::SampleRateShading,
    ];
    // And, as wgpu-hal adds them on a device with the SUBGROUP feature (the program requests it where it exists).
    let subgroups = [
        spv::Capability::GroupNonUniform,
        spv::Capability::GroupNonUniformVote,
        spv::Capability::GroupNonUniformArithmetic,
        spv::Capability::GroupNonUniformBallot,
        spv::Capability::GroupNonUniformShuffle,
        spv::Capability::GroupNonUniformShuffleRelative,
        spv::Capability::GroupNonUniformQuad,
    ];
    let with_subgroups = v.family.ends_with("_subgroup");
    let capabilities: Vec<spv::Capability> = capabilities
        .into_iter()
        .chain(subgroups.into_iter().filter(|_| with_subgroups))
        .collect();
    // As wgpu-hal's Vulkan pipeline layout: descriptor set = group, Vulkan bindings numbered from 0 in binding
    // order within each group.
    let mut binding_map = spv::BindingMap::default();
    let mut next = std::collections::BTreeMap::<u32, u32>::new();
    for (binding, _, _) in bindings(&v.module) {
        let slot = next.entry(binding.group).or_default();
        binding_map.insert(
            binding,
            spv::BindingInfo {
                descriptor_set: binding.group,
                binding: *slot,
                binding_array_size: None,
            },
        );
        *slot += 1;
    }
    let options = spv::Options {
        lang_version,
        flags: spv::WriterFlags::LABEL_VARYINGS
            | spv::WriterFlags::FORCE_POINT_SIZE
            | if source.is_some() {
                spv::WriterFlags::DEBUG
            } else {
                spv::WriterFlags::empty()
            },
        capabilities: Some(capabilities.into_iter().collect()),
        // Restrict: what naga emits where the device lacks robust buffer access; the most code.
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::Restrict,
            buffer: naga::proc::BoundsCheckPolicy::Restrict,
            image_load: naga::proc::BoundsCheckPolicy::Restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        // The program asks for no zero-initialized workgroup memory (src/kernels/mod.rs).
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        fake_missing_bindings: false,
        binding_map,
        debug_info: source.map(|source_code| spv::DebugInfo {
            source_code,
            file_name: v.family,
            language: spv::SourceLanguage::WGSL,
        }),
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: v.stage,
        entry_point: v.entry.clone(),
    };
    spv::write_vec(&v.module, &v.info, &options, Some(&pipeline))
        .map(Output::Words)
        .map_err(|e| chain(&e))
}

fn metal(v: &Variant, lang_version: (u8, u8)) -> Result<Output, String> {
    // As wgpu-hal's Metal pipeline layout: buffers take slots in (group, binding) order, then the sizes buffer.
    let mut resources = msl::BindingMap::default();
    let list = bindings(&v.module);
    for (slot, &(binding, _, writable)) in list.iter().enumerate() {
        resources.insert(
            binding,
            msl::BindTarget {
                buffer: Some(slot as u8),
                mutable: writable,
                ..Default::default()
            },
        );
    }
    let options = msl::Options {
        lang_version,
        per_entry_point_map: msl::EntryPointResourceMap::from([(
            v.entry.clone(),
            msl::EntryPointResources {
                resources,
                immediates_buffer: None,
                sizes_buffer: Some(list.len() as u8),
            },
        )]),
        fake_missing_bindings: false,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::Restrict,
            buffer: naga::proc::BoundsCheckPolicy::Restrict,
            image_load: naga::proc::BoundsCheckPolicy::Restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: false,
        ..msl::Options::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((v.stage, v.entry.clone())),
        vertex_pulling_transform: true,
        ..Default::default()
    };
    let (text, info) =
        msl::write_string(&v.module, &v.info, &options, &pipeline).map_err(|e| chain(&e))?;
    for name in info.entry_point_names {
        name.map_err(|e| chain(&e))?;
    }
    Ok(Output::Text(text))
}

fn hlsl(v: &Variant, shader_model: hlsl::ShaderModel) -> Result<Output, String> {
    // As wgpu-hal's DX12 layout: one register space per bind group; b (constant buffers), t (read-only storage)
    // and u (read-write storage) registers are separate, so the binding number serves as register. The special
    // constants (num_workgroups for the kernels that read it) in a space of their own.
    let list = bindings(&v.module);
    let mut binding_map = hlsl::BindingMap::default();
    for &(binding, _, _) in &list {
        binding_map.insert(
            binding,
            hlsl::BindTarget {
                space: binding.group as u8,
                register: binding.binding,
                binding_array_size: None,
                dynamic_storage_buffer_offsets_index: None,
                restrict_indexing: true,
            },
        );
    }
    let special = hlsl::BindTarget {
        space: list
            .iter()
            .map(|(b, _, _)| b.group as u8 + 1)
            .max()
            .unwrap_or(0),
        register: 0,
        binding_array_size: None,
        dynamic_storage_buffer_offsets_index: None,
        restrict_indexing: false,
    };
    let options = hlsl::Options {
        shader_model,
        binding_map,
        fake_missing_bindings: false,
        special_constants_binding: Some(special),
        zero_initialize_workgroup_memory: false,
        restrict_indexing: true,
        force_loop_bounding: true,
        ..hlsl::Options::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((v.stage, v.entry.clone())),
    };
    let mut text = String::new();
    let info = hlsl::Writer::new(&mut text, &options, &pipeline)
        .write(&v.module, &v.info, None)
        .map_err(|e| chain(&e))?;
    for name in info.entry_point_names {
        name.map_err(|e| chain(&e))?;
    }
    Ok(Output::Text(text))
}

fn gl(v: &Variant, version: glsl::Version) -> Result<Output, String> {
    // As wgpu-hal's GL layout: uniform buffers and storage buffers each numbered from 0 in (group, binding)
    // order.
    let mut binding_map = glsl::BindingMap::default();
    let (mut uniforms, mut storage) = (0u8, 0u8);
    for (binding, uniform, _) in bindings(&v.module) {
        let counter = if uniform { &mut uniforms } else { &mut storage };
        binding_map.insert(binding, *counter);
        *counter += 1;
    }
    let options = glsl::Options {
        version,
        writer_flags: glsl::WriterFlags::FORCE_POINT_SIZE,
        binding_map,
        zero_initialize_workgroup_memory: false,
    };
    let pipeline = glsl::PipelineOptions {
        shader_stage: v.stage,
        entry_point: v.entry.clone(),
        multiview: None,
    };
    // wgpu-hal's GL back end leaves buffer bounds to the driver.
    let policies = naga::proc::BoundsCheckPolicies::default();
    let mut text = String::new();
    glsl::Writer::new(&mut text, &v.module, &v.info, &options, &pipeline, policies)
        .and_then(|mut w| w.write())
        .map_err(|e| chain(&e))?;
    Ok(Output::Text(text))
}

/// A fresh scratch directory for this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vae-portability-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Fails (never skips) when a command-line tool is missing, saying how to get it.
fn require_tool(tool: &str, package: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} not found: install {package} (apt-get install {package}); \
             this test checks the generated shaders with it and is not skipped without it"
        ),
        Err(e) => panic!("{tool} could not be run: {e}"),
    }
}

/// Runs `check` on every item, two threads at a time (the CI machine has two cores); returns the failures.
fn in_parallel<T: Sync>(items: &[T], check: impl Fn(&T) -> Option<String> + Sync) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().filter_map(&check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("checker thread"))
            .collect()
    })
}

fn report(what: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {total} {what} failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn override_values_cover_the_program() {
    // Every override listed is declared by some family, so the table cannot drift from the shaders unnoticed.
    let declared: Vec<String> = FAMILIES
        .iter()
        .filter_map(|f| parse(f).ok())
        .flat_map(|(m, _)| {
            m.overrides
                .iter()
                .filter_map(|(_, o)| o.name.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, _) in OVERRIDE_VALUES {
        assert!(
            declared.iter().any(|d| d == name),
            "OVERRIDE_VALUES lists {name}, which no shader family declares"
        );
    }
    // And the variants: matmul's 5 entry points × 3 layouts × 5 epilogues alone are 75.
    let matmul = all_variants()
        .iter()
        .filter(|v| v.family == "matmul")
        .count();
    assert!(matmul >= 75, "only {matmul} matmul variants");
}

#[test]
fn every_entry_point_translates_for_every_backend() {
    let variants = all_variants();
    let sources: Vec<(&str, String)> = FAMILIES.iter().map(|f| (f.name, f.source())).collect();
    let jobs: Vec<(&Variant, Backend)> = variants
        .iter()
        .flat_map(|v| {
            BACKENDS
                .iter()
                .filter(|b| applies(v, b))
                .map(move |&b| (v, b))
        })
        .collect();
    let failures = in_parallel(&jobs, |&(v, backend)| {
        let source = &sources.iter().find(|(n, _)| *n == v.family)?.1;
        backend
            .translate(v, source)
            .err()
            .map(|e| format!("{} — {}: {e}", v.name(), backend.name()))
    });
    report("translations", jobs.len(), failures);
}

#[test]
fn spirv_passes_spirv_val() {
    require_tool("spirv-val", "spirv-tools");
    let dir = scratch("spirv");
    let variants = all_variants();
    let sources: Vec<(&str, String)> = FAMILIES.iter().map(|f| (f.name, f.source())).collect();
    let jobs: Vec<(&Variant, Backend, usize)> = variants
        .iter()
        .flat_map(|v| {
            BACKENDS
                .iter()
                .enumerate()
                .filter(|(_, b)| b.vulkan_env().is_some() && applies(v, b))
                .map(move |(i, &b)| (v, b, i))
        })
        .collect();
    let failures = in_parallel(&jobs, |&(v, backend, i)| {
        let what = format!("{} — {}", v.name(), backend.name());
        let source = &sources.iter().find(|(n, _)| *n == v.family)?.1;
        let words = match backend.translate(v, source) {
            Ok(Output::Words(w)) => w,
            Ok(Output::Text(_)) => unreachable!("SPIR-V is words"),
            Err(e) => return Some(format!("{what}: {e}")),
        };
        let path = dir.join(format!("{}-{i}.spv", v.file_stem()));
        std::fs::write(&path, bytemuck::cast_slice::<u32, u8>(&words)).expect("write SPIR-V");
        spirv_val(&path, backend.vulkan_env()?).map(|e| format!("{what}: spirv-val: {e}"))
    });
    let _ = std::fs::remove_dir_all(&dir);
    report("SPIR-V modules", jobs.len(), failures);
}

/// `spirv-val`'s complaint about a module, if any.
fn spirv_val(path: &Path, env: &str) -> Option<String> {
    let out = Command::new("spirv-val")
        .args(["--target-env", env])
        .arg(path)
        .output()
        .expect("run spirv-val");
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

#[test]
fn glsl_compiles_with_glslang() {
    require_tool("glslangValidator", "glslang-tools");
    let dir = scratch("glsl");
    let mut failures = Vec::new();
    let mut total = 0;
    for (i, &backend) in BACKENDS.iter().enumerate().filter(|(_, b)| b.is_glsl()) {
        // One glslangValidator run per GLSL version for all shaders: its start-up costs more than a compile.
        let mut files = Vec::new();
        for v in all_variants() {
            total += 1;
            match backend.translate(v, "") {
                Ok(Output::Text(text)) => {
                    let path = dir.join(format!("{}-{i}.comp", v.file_stem()));
                    std::fs::write(&path, text).expect("write GLSL");
                    files.push((path, v));
                }
                Ok(Output::Words(_)) => unreachable!("GLSL is text"),
                Err(e) => failures.push(format!("{} — {}: {e}", v.name(), backend.name())),
            }
        }
        let out = Command::new("glslangValidator")
            .args(files.iter().map(|(p, _)| p))
            .output()
            .expect("run glslangValidator");
        if out.status.success() {
            continue;
        }
        // It prints each file's path, then that file's errors.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut current: Option<&Variant> = None;
        let mut errors: Vec<(&Variant, String)> = Vec::new();
        for line in stdout.lines() {
            if let Some((_, v)) = files.iter().find(|(p, _)| Path::new(line.trim()) == p) {
                current = Some(v);
            } else if line.starts_with("ERROR") {
                match (current, errors.last_mut()) {
                    (Some(v), Some((last, text))) if std::ptr::eq(*last, v) => {
                        let _ = write!(text, "; {line}");
                    }
                    (Some(v), _) => errors.push((v, line.to_string())),
                    (None, _) => {
                        failures.push(format!("{}: glslangValidator: {line}", backend.name()))
                    }
                }
            }
        }
        if errors.is_empty() {
            failures.push(format!(
                "{}: glslangValidator failed ({}): {stdout}{}",
                backend.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for (v, text) in errors {
            failures.push(format!(
                "{} — {}: glslangValidator: {text}",
                v.name(),
                backend.name()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    report("GLSL shaders", total, failures);
}
