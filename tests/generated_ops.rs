//! kiln-forward's `src/ops.rs` is what `tools/gen_ops.py` writes from the burn-backend this workspace builds
//! with: a Burn upgrade, or a hand edit of the generated file, fails here until the file is
//! generated again (the command is in the script's docstring).

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::{cargo_metadata, workspace_root};

/// The folder of the burn-backend source cargo resolved for this workspace.
fn burn_backend_source() -> PathBuf {
    let manifest = cargo_metadata(&[])["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "burn-backend")
        .expect("the workspace depends on burn-backend")["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    PathBuf::from(manifest).parent().unwrap().to_path_buf()
}

#[test]
fn ops_rs_is_what_its_generator_writes_from_this_burn() {
    let crate_dir = workspace_root().join("crates/kiln-forward");
    let source = burn_backend_source();
    let out = Command::new("python3")
        .arg(crate_dir.join("tools/gen_ops.py"))
        .arg(&source)
        .output()
        .expect("python3 runs tools/gen_ops.py");
    assert!(
        out.status.success(),
        "gen_ops.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(crate_dir.join("src/ops.rs")).unwrap();
    if generated != committed {
        let first = generated
            .lines()
            .zip(committed.lines())
            .position(|(g, c)| g != c)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "src/ops.rs differs from what tools/gen_ops.py writes from {} (first at line {}): \
             run `python3 crates/kiln-forward/tools/gen_ops.py {} > crates/kiln-forward/src/ops.rs`",
            source.display(),
            first + 1,
            source.display()
        );
    }
}
