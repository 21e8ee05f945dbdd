//! What a run or a benchmark records of the machine it ran on: speed ratios differ between
//! processors of the same machine kind (AVX2 only, or AVX-512 too), so a figure without its
//! processor cannot be compared with another.

/// The processor, from `/proc/cpuinfo` (Linux), e.g. `Intel(R) Xeon(R) Processor (family 6
/// model 207, AVX-512)`; `None` where the OS does not say.
pub fn processor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    Some(describe(&cpuinfo))
}

/// [`processor`] from the text of `/proc/cpuinfo`: its first processor's model name, family,
/// model and widest vector extension.
fn describe(cpuinfo: &str) -> String {
    let first = cpuinfo.split("\n\n").next().unwrap_or("");
    let field = |key: &str| {
        first.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let flags = field("flags").unwrap_or_default();
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let vector = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    let name = field("model name").unwrap_or_else(|| "unknown processor".into());
    match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name} (family {family} model {model}, {vector})"),
        _ => format!("{name} ({vector})"),
    }
}

/// The process's peak resident set in MiB, where the OS reports it (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_processor_is_named_with_its_family_model_and_vector_width() {
        let xeon = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n\
                    model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f fma\n\n\
                    processor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            describe(xeon),
            "Intel(R) Xeon(R) Processor (family 6 model 207, AVX-512)"
        );
        let epyc =
            "cpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2 fma\n";
        assert_eq!(describe(epyc), "AMD EPYC 7B13 (family 25 model 1, AVX2)");
        assert_eq!(describe(""), "unknown processor (no AVX2)");
    }
}
