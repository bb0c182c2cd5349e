//! Every WGSL file parses and validates with naga, no GPU needed; a broken shader is reported by file and line.

use std::collections::BTreeSet;

use vae_wgpu::kernels::{FAMILIES, Family, validate};

#[test]
fn every_family_validates() {
    for family in FAMILIES {
        if let Err(e) = validate(family) {
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
    let family = Family {
        name: "broken",
        files: &[
            (
                "shaders/first.wgsl",
                "const A: u32 = 1u;\nconst B: u32 = 2u;",
            ),
            ("shaders/second.wgsl", "// comment\n\nconst C: u32 = 1.5;\n"),
        ],
    };
    let e = validate(&family).unwrap_err();
    assert_eq!((e.file, e.line), ("shaders/second.wgsl", 3), "{e}");
    // A parse error too.
    let family = Family {
        name: "broken",
        files: &[("shaders/only.wgsl", "fn f() {\n  let x = ;\n}\n")],
    };
    let e = validate(&family).unwrap_err();
    assert_eq!((e.file, e.line), ("shaders/only.wgsl", 2), "{e}");
}
