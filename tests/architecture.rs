//! ARCHITECTURE.md's picture of the crates is the truth: the edges it draws between Kiln's
//! crates are exactly the `[dependencies]` cargo reports, and they point down the layers.

use std::collections::BTreeSet;

mod common;
use common::{cargo_metadata, workspace_root};

type Edges = BTreeSet<(String, String)>;

/// The `kiln-*` names in `text`, in order.
fn crates_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("kiln-"))
        .map(String::from)
        .collect()
}

/// The edges of the ```text block under "Bird's-eye view": `A ──> B, C` makes A -> B and
/// A -> C; a line that starts with an arrow (`├──> X ──> Y`) continues from the last line's
/// first crate, and each further arrow goes from the crates before it to those after it.
fn drawn_edges(architecture: &str) -> Edges {
    let picture = architecture
        .split("## Bird's-eye view")
        .nth(1)
        .and_then(|s| s.split("```text").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("ARCHITECTURE.md has a ```text picture under \"Bird's-eye view\"");
    let mut edges = Edges::new();
    let mut source = String::new();
    for line in picture.lines().filter(|l| l.contains('>')) {
        let segments: Vec<Vec<String>> = line.split('>').map(crates_in).collect();
        let mut from = match segments[0].as_slice() {
            [] => vec![source.clone()],
            names => {
                source = names[0].clone();
                names.to_vec()
            }
        };
        for to in &segments[1..] {
            for f in &from {
                for t in to {
                    edges.insert((f.clone(), t.clone()));
                }
            }
            from = to.clone();
        }
    }
    edges
}

/// The normal dependencies between the workspace's `kiln-*` crates, from `cargo metadata`.
fn cargo_edges() -> Edges {
    let metadata = cargo_metadata(&["--no-deps"]);
    let ours = |name: &str| {
        name.starts_with("kiln-") && name != "kiln-integration-tests" && !name.contains("example")
    };
    let mut edges = Edges::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !ours(name) {
            continue;
        }
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let kind = &dep["kind"];
            if ours(dep_name) {
                assert!(
                    kind.is_null(),
                    "{name} has {dep_name} as a {kind} dependency"
                );
                edges.insert((name.to_string(), dep_name.to_string()));
            }
        }
    }
    edges
}

#[test]
fn the_crate_picture_is_cargos_dependency_graph_and_points_down() {
    let architecture = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let drawn = drawn_edges(&architecture);
    let real = cargo_edges();
    let missing: Vec<_> = real.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&real).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ARCHITECTURE.md's picture is out of date: edges cargo has and the picture lacks: \
         {missing:?}; edges drawn that cargo lacks: {extra:?}"
    );
    // The layers, top to bottom; a crate depends only on lower ones.
    let layer = |name: &str| match name {
        "kiln-cli" => 0,
        "kiln-report" => 1,
        "kiln-experiments" => 2,
        "kiln-train" => 3,
        "kiln-cpu" | "kiln-tch" => 3,
        "kiln-models" | "kiln-data" | "kiln-forward" => 4,
        "kiln-fused" => 5,
        other => panic!("{other}: a crate without a layer; add it to ARCHITECTURE.md and here"),
    };
    for (from, to) in &real {
        assert!(
            layer(from) < layer(to),
            "{from} -> {to} points up or sideways"
        );
    }
}
