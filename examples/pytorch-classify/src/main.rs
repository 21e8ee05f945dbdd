use std::path::Path;

use kiln_example_pytorch_classify::{classify, CLASSES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: kiln-example-pytorch-classify WEIGHTS.pt IMAGE...");
        std::process::exit(2);
    }
    let images: Vec<&Path> = args[1..].iter().map(Path::new).collect();
    match classify(Path::new(&args[0]), &images) {
        Ok(rows) => {
            for (image, p) in images.iter().zip(rows) {
                let mut ranked: Vec<(usize, f32)> = p.into_iter().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top: Vec<String> = ranked[..3]
                    .iter()
                    .map(|&(c, p)| format!("{} {:.1}%", CLASSES[c], 100.0 * p))
                    .collect();
                println!("{}: {}", image.display(), top.join(", "));
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
