//! Every WGSL module parses and validates with naga against the capabilities the program asks for, no GPU
//! needed; a broken shader is reported by file and line; and every uniform struct a module binds has exactly the
//! layout of its Rust twin in `src/kernels/contract.rs`.

use std::collections::BTreeSet;

use vae_wgpu::gpu::pipeline::{ShaderSource, capabilities, validate};
use vae_wgpu::kernels::contract::{self, StructInfo};
use vae_wgpu::kernels::{FAMILIES, program_features};

fn program_capabilities() -> naga::valid::Capabilities {
    capabilities(program_features())
}

#[test]
fn every_family_validates() {
    for family in FAMILIES {
        if let Err(e) = validate(family, program_capabilities()) {
            panic!("shader family {} does not validate:\n{e}", family.name);
        }
    }
}

#[test]
fn every_shader_file_belongs_to_a_family() {
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
            .expect("shaders/")
            .map(|e| format!("shaders/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|p| p.ends_with(".wgsl"))
            .collect();
    let used: BTreeSet<String> = FAMILIES
        .iter()
        .flat_map(|f| f.files.iter().map(|(p, _)| p.to_string()))
        .collect();
    let unvalidated: Vec<_> = on_disk.difference(&used).collect();
    assert!(
        unvalidated.is_empty(),
        "shaders no family includes (so nothing validates them): {unvalidated:?}"
    );
}

#[test]
fn errors_name_the_file_and_line() {
    // A family of two files whose second has a type error on its line 3.
    let family = ShaderSource {
        name: "broken",
        prelude: None,
        files: &[
            (
                "shaders/first.wgsl",
                "const A: u32 = 1u;\nconst B: u32 = 2u;",
            ),
            ("shaders/second.wgsl", "// comment\n\nconst C: u32 = 1.5;\n"),
        ],
    };
    let e = validate(&family, program_capabilities()).unwrap_err();
    assert_eq!((e.file, e.line), ("shaders/second.wgsl", 3), "{e}");
    // A parse error too.
    let family = ShaderSource {
        name: "broken",
        prelude: None,
        files: &[("shaders/only.wgsl", "fn f() {\n  let x = ;\n}\n")],
    };
    let e = validate(&family, program_capabilities()).unwrap_err();
    assert_eq!((e.file, e.line), ("shaders/only.wgsl", 2), "{e}");
}

#[test]
fn a_module_needing_more_than_the_program_asks_for_is_refused() {
    // f16 needs a feature the program never requests: validation must fail here, as it would on most devices.
    let family = ShaderSource {
        name: "needs_f16",
        prelude: None,
        files: &[(
            "shaders/f16.wgsl",
            "enable f16;\n@compute @workgroup_size(1) fn main() { let h = 1.0h; }\n",
        )],
    };
    assert!(validate(&family, program_capabilities()).is_err());
}

/// The WGSL spelling of a member's type, for the kinds of type the contract allows.
fn wgsl_type(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    use naga::{ScalarKind, TypeInner, VectorSize};
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => "u32".to_string(),
        (ScalarKind::Sint, 4) => "i32".to_string(),
        (ScalarKind::Float, 4) => "f32".to_string(),
        (k, w) => format!("{k:?}{}", w * 8),
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => {
            let n = match size {
                VectorSize::Bi => 2,
                VectorSize::Tri => 3,
                VectorSize::Quad => 4,
            };
            format!("vec{n}<{}>", scalar(*s))
        }
        other => format!("{other:?}"),
    }
}

/// The type a uniform binds: itself, or the element of an array of them (the matmul kernels' two params).
fn uniform_struct(module: &naga::Module, ty: naga::Handle<naga::Type>) -> naga::Handle<naga::Type> {
    match module.types[ty].inner {
        naga::TypeInner::Array { base, .. } => base,
        _ => ty,
    }
}

/// What differs between each uniform struct bound in `module` and its Rust twin among `rust`: a missing or extra
/// member, another order, type or offset, another size, or a struct the contract does not define.
fn uniform_mismatches(module: &naga::Module, rust: &[StructInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (_, var) in module.global_variables.iter() {
        if var.space != naga::AddressSpace::Uniform {
            continue;
        }
        let ty = &module.types[uniform_struct(module, var.ty)];
        let name = ty.name.clone().unwrap_or_default();
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            problems.push(format!(
                "uniform {:?} is not a struct",
                var.name.as_deref().unwrap_or("?")
            ));
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(want) = rust.iter().find(|s| s.name == name) else {
            problems.push(format!(
                "uniform struct {name} has no Rust twin in src/kernels/contract.rs"
            ));
            continue;
        };
        if *span as usize != want.size {
            problems.push(format!(
                "{name}: {} bytes in WGSL, {} in Rust",
                span, want.size
            ));
        }
        let got: Vec<(String, String, u32)> = members
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap_or_default(),
                    wgsl_type(module, m.ty),
                    m.offset,
                )
            })
            .collect();
        for (i, f) in want.fields.iter().enumerate() {
            match got.get(i) {
                None => problems.push(format!("{name}: member {} is missing in WGSL", f.name)),
                Some((n, t, o)) => {
                    if n != f.name || t != f.wgsl || *o as usize != f.offset {
                        problems.push(format!(
                            "{name}: member {i} is `{n}: {t}` at byte {o} in WGSL but `{}: {}` at byte {} in Rust",
                            f.name, f.wgsl, f.offset
                        ));
                    }
                }
            }
        }
        for (n, t, o) in got.iter().skip(want.fields.len()) {
            problems.push(format!(
                "{name}: WGSL has an extra member `{n}: {t}` at byte {o}"
            ));
        }
    }
    problems
}

#[test]
fn uniform_structs_match_their_rust_twins() {
    let rust = contract::structs();
    let mut bound = BTreeSet::new();
    for family in FAMILIES {
        let module = validate(family, program_capabilities()).expect("validates");
        let problems = uniform_mismatches(&module, &rust);
        assert!(
            problems.is_empty(),
            "shader family {}:\n  {}",
            family.name,
            problems.join("\n  ")
        );
        for (_, var) in module.global_variables.iter() {
            if var.space == naga::AddressSpace::Uniform {
                bound.extend(module.types[uniform_struct(&module, var.ty)].name.clone());
            }
        }
    }
    // Every struct of the contract is bound by some kernel: none is dead or spelled differently in a shader.
    let defined: BTreeSet<String> = rust.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(bound, defined, "uniform structs bound vs defined");
}

#[test]
fn the_layout_check_names_a_swapped_or_missing_field() {
    // A shader that declares its own MatmulParams with `n` and `m` swapped and `bias_off` left out.
    let family = ShaderSource {
        name: "drifted",
        prelude: None,
        files: &[(
            "shaders/drifted.wgsl",
            "struct MatmulParams { n: u32, m: u32, k: u32, a_off: u32, b_off: u32, c_off: u32, aux_off: u32 }\n\
             @group(0) @binding(0) var<uniform> p: MatmulParams;\n\
             @compute @workgroup_size(1) fn main() { let x = p.m; }\n",
        )],
    };
    let module = validate(&family, program_capabilities()).unwrap();
    let problems = uniform_mismatches(&module, &contract::structs()).join("\n");
    assert!(problems.contains("member 0 is `n: u32`"), "{problems}");
    assert!(
        problems.contains("member bias_off is missing"),
        "{problems}"
    );
    assert!(problems.contains("bytes in WGSL"), "{problems}");
}
