//! Smoke fuzzing on stable Rust: every target over its committed seeds (`seeds/<target>/`, plus a
//! libFuzzer-grown `corpus/<target>/` if there is one), then over inputs mutated from them with a
//! seeded PRNG (bit flips, byte changes, insertions, deletions, truncations, splices; for DER,
//! structural changes with the lengths rewritten) for a time budget per target. No coverage
//! guidance: mutants the parser accepts are kept as parents, that is all. A panic (failed property), a hang or a huge allocation is a finding: the input is
//! written to `artifacts/<target>/` and the run fails.
//!
//! ```text
//! smoke [--seconds S] [--seed N] [--target NAME]... [--list]
//! smoke --target NAME FILE...        replay files (e.g. an artifact) on one target
//! smoke --write-seeds                (re)write the generated protocol seeds under seeds/
//! ```
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use estuary_proto_fuzz::{Target, TARGETS};

mod der_mutate;
mod generate;

/// The fuzz crate's directory (seeds/, corpus/, artifacts/).
fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Inputs grow up to this size (or twice the largest seed).
const MAX_LEN: usize = 8192;
/// An input running longer than this is a hang.
const HANG: Duration = Duration::from_secs(20);
/// One allocation above this is a finding (inputs are a few KiB).
const ALLOC_LIMIT: usize = 256 << 20;
/// Accepted mutants kept as parents.
const POOL: usize = 512;

/// The input being run, for the watchdog and the allocation guard to save.
static CURRENT: Mutex<(Vec<u8>, &str)> = Mutex::new((Vec::new(), ""));
/// Inputs run so far (the watchdog's heartbeat).
static RUNS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static ALLOC: guard::Limited = guard::Limited;

mod guard {
    //! The global allocator: the system's, refusing (after saving the input) any single
    //! allocation over [`super::ALLOC_LIMIT`].
    #![allow(unsafe_code)]
    use std::alloc::{GlobalAlloc, Layout, System};

    pub struct Limited;

    // SAFETY: every call is forwarded to `System` unchanged; an oversized request saves the
    // input (small allocations, served by `System` through this same path) and aborts.
    unsafe impl GlobalAlloc for Limited {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.size() > super::ALLOC_LIMIT {
                super::save_and_abort("huge-alloc", layout.size());
            }
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.size() > super::ALLOC_LIMIT {
                super::save_and_abort("huge-alloc", layout.size());
            }
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if new_size > super::ALLOC_LIMIT {
                super::save_and_abort("huge-alloc", new_size);
            }
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

fn save_and_abort(kind: &str, detail: usize) -> ! {
    if let Ok(cur) = CURRENT.try_lock() {
        let path = save(cur.1, kind, &cur.0);
        eprintln!(
            "FINDING {}: {kind} ({detail}) on {} bytes, saved to {}",
            cur.1,
            cur.0.len(),
            path.display()
        );
    }
    std::process::abort();
}

/// Writes a finding to `artifacts/<target>/<kind>-<hash>`.
fn save(target: &str, kind: &str, data: &[u8]) -> PathBuf {
    let dir = here().join("artifacts").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{:016x}", fnv(data)));
    let _ = std::fs::write(&path, data);
    path
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes that matter to the parsers here: DER tags and lengths, separators of the text
/// formats, UTF-8 lead bytes.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x17, 0x18, 0x1e, 0x30, 0x31, 0x7f, 0x80,
    0x81, 0x82, 0x83, 0x84, 0xa0, 0xa3, 0xff, b'"', b'\\', b',', b';', b'=', b'%', b'-', b':',
    b'.', b'+', b'T', b'Z', b'*', b'?', b'/', b'\n', b' ', b'{', b'}', b'[', b']', b'0', b'9',
    0xc3, 0xe2, 0xf0,
];

/// Multi-byte characters, inserted whole so text targets see valid UTF-8 with wide chars.
const WIDE: &[&str] = &["\u{e9}", "\u{20ac}", "\u{1f600}", "\u{0}", "\u{feff}"];

fn mutate(rng: &mut Rng, parent: &[u8], pool: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut d = parent.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                d.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                d.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, copy);
            }
            6 if len > 0 => d.truncate(rng.below(len)),
            7 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            8 if !pool.is_empty() && len > 0 => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(64));
                    let at = rng.below(len);
                    let n = n.min(len - at);
                    d[at..at + n].copy_from_slice(&other[from..from + n]);
                }
            }
            9 if len > 0 => {
                let i = rng.below(len);
                let delta = 1 + rng.below(4) as u8;
                d[i] = if rng.below(2) == 0 {
                    d[i].wrapping_add(delta)
                } else {
                    d[i].wrapping_sub(delta)
                };
            }
            10 if len > 1 => {
                let i = rng.below(len - 1);
                let v: u16 = match rng.below(5) {
                    0 => 0,
                    1 => 0xffff,
                    2 => len as u16,
                    3 => (len as u16).wrapping_sub(i as u16),
                    _ => rng.next() as u16,
                };
                d[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            11 => {
                let i = rng.below(len + 1);
                let w = WIDE[rng.below(WIDE.len())].as_bytes().to_vec();
                d.splice(i..i, w);
            }
            12 if len > 0 => {
                // Repeat one byte: long runs find quadratic paths and length overflows.
                let i = rng.below(len);
                let n = 1 + rng.below(256);
                let b = d[i];
                d.splice(i..i, std::iter::repeat_n(b, n));
            }
            _ => {}
        }
    }
    d.truncate(max_len);
    d
}

fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Runs one input; `Err` with the panic's message on a finding.
fn run_one(t: &Target, data: &[u8]) -> Result<bool, String> {
    if let Ok(mut cur) = CURRENT.lock() {
        cur.0.clear();
        cur.0.extend_from_slice(data);
        cur.1 = t.name;
    }
    RUNS.fetch_add(1, Ordering::Relaxed);
    std::panic::catch_unwind(|| (t.check)(data)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

struct Outcome {
    seeds: usize,
    runs: u64,
    accepted: u64,
    finding: Option<PathBuf>,
}

fn fuzz_target(t: &Target, budget: Duration, seed: u64) -> Outcome {
    let mut pool = read_dir_files(&here().join("seeds").join(t.name));
    pool.extend(read_dir_files(&here().join("corpus").join(t.name)));
    pool.push(Vec::new());
    let seeds = pool.len();
    let max_len = pool
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .saturating_mul(2)
        .max(MAX_LEN);
    let mut out = Outcome {
        seeds,
        runs: 0,
        accepted: 0,
        finding: None,
    };
    let report = |data: &[u8], msg: String| {
        let path = save(t.name, "crash", data);
        eprintln!(
            "FINDING {}: {msg}\n  input ({} bytes) saved to {}\n  replay: cargo run --release --manifest-path fuzz/Cargo.toml --bin smoke -- --target {} {}",
            t.name,
            data.len(),
            path.display(),
            t.name,
            path.display()
        );
        path
    };
    // Seeds first: a replay of everything committed.
    for s in pool.clone() {
        out.runs += 1;
        match run_one(t, &s) {
            Ok(a) => out.accepted += u64::from(a),
            Err(msg) => {
                out.finding = Some(report(&s, msg));
                return out;
            }
        }
    }
    let mut rng = Rng(seed ^ fnv(t.name.as_bytes()));
    let start = Instant::now();
    let mut kept = 0usize;
    while start.elapsed() < budget {
        for _ in 0..64 {
            // Half the parents are seeds, so that permissive parsers (which accept nearly
            // every mutant) do not drift to a pool of tiny inputs.
            let parent = if pool.len() == seeds || rng.below(2) == 0 {
                &pool[rng.below(seeds)]
            } else {
                &pool[seeds + rng.below(pool.len() - seeds)]
            };
            // DER inputs: half the time a structural mutant (lengths stay right).
            let donor = &pool[rng.below(pool.len())];
            let structural = parent.first() == Some(&0x30) && rng.below(2) == 0;
            let input = structural
                .then(|| der_mutate::mutate(&mut rng, parent, Some(donor)))
                .flatten()
                .filter(|d| d.len() <= max_len)
                .unwrap_or_else(|| mutate(&mut rng, parent, &pool, max_len));
            out.runs += 1;
            match run_one(t, &input) {
                Ok(true) => {
                    out.accepted += 1;
                    // Keep one accepted mutant in 8: room for variety, not for copies.
                    if rng.below(8) == 0 {
                        if pool.len() < seeds + POOL {
                            pool.push(input);
                        } else {
                            pool[seeds + kept % POOL] = input;
                        }
                        kept += 1;
                    }
                }
                Ok(false) => {}
                Err(msg) => {
                    out.finding = Some(report(&input, msg));
                    return out;
                }
            }
        }
    }
    out
}

/// Stops the process when one input runs longer than [`HANG`], saving it.
fn watchdog() {
    std::thread::spawn(|| {
        let mut last = RUNS.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = RUNS.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > HANG {
                if let Ok(cur) = CURRENT.lock() {
                    let path = save(cur.1, "timeout", &cur.0);
                    eprintln!(
                        "FINDING {}: one input ran over {} s, saved to {}",
                        cur.1,
                        HANG.as_secs(),
                        path.display()
                    );
                }
                std::process::exit(1);
            }
        }
    });
}

struct Args {
    seconds: f64,
    seed: Option<u64>,
    targets: Vec<String>,
    files: Vec<PathBuf>,
    list: bool,
    write_seeds: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10.0,
        seed: None,
        targets: Vec::new(),
        files: Vec::new(),
        list: false,
        write_seeds: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                a.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or("--seconds needs a number of seconds")?;
            }
            "--seed" => {
                a.seed = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--seed needs a number")?,
                );
            }
            "--target" => a.targets.push(it.next().ok_or("--target needs a name")?),
            "--list" => a.list = true,
            "--write-seeds" => a.write_seeds = true,
            "-h" | "--help" => return Err(String::new()),
            f if !f.starts_with('-') => a.files.push(PathBuf::from(f)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("smoke: {e}");
            }
            eprintln!(
                "usage: smoke [--seconds S] [--seed N] [--target NAME]... [--list]\n       smoke --target NAME FILE...\n       smoke --write-seeds"
            );
            return ExitCode::from(2);
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return ExitCode::SUCCESS;
    }
    if args.write_seeds {
        return match generate::write_all(&here().join("seeds")) {
            Ok(n) => {
                println!(
                    "wrote {n} generated seeds under {}",
                    here().join("seeds").display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smoke: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut chosen: Vec<&Target> = Vec::new();
    for name in &args.targets {
        match TARGETS.iter().find(|t| t.name == name) {
            Some(t) => chosen.push(t),
            None => {
                eprintln!("smoke: no target {name}; --list shows them");
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.iter().collect();
    }
    watchdog();
    if !args.files.is_empty() {
        let [t] = chosen.as_slice() else {
            eprintln!("smoke: replaying files needs exactly one --target");
            return ExitCode::from(2);
        };
        let mut failed = false;
        for f in &args.files {
            let data = match std::fs::read(f) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("smoke: {}: {e}", f.display());
                    return ExitCode::FAILURE;
                }
            };
            match run_one(t, &data) {
                Ok(a) => println!(
                    "{}: {} ({})",
                    t.name,
                    f.display(),
                    if a { "accepted" } else { "refused" }
                ),
                Err(msg) => {
                    eprintln!("FINDING {}: {}: {msg}", t.name, f.display());
                    failed = true;
                }
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let budget = Duration::from_secs_f64(args.seconds);
    println!(
        "smoke fuzzing {} targets, {:.1} s each, seed {seed} (coverage-blind: seeds + random mutations)",
        chosen.len(),
        args.seconds
    );
    let started = Instant::now();
    let mut findings = Vec::new();
    for t in chosen {
        let o = fuzz_target(t, budget, seed);
        println!(
            "{:<11} {:>3} seeds {:>9} runs {:>8} accepted  {}",
            t.name,
            o.seeds,
            o.runs,
            o.accepted,
            if o.finding.is_some() { "FINDING" } else { "ok" }
        );
        if let Some(p) = o.finding {
            findings.push(p);
        }
    }
    println!("{:.1} s in all", started.elapsed().as_secs_f64());
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} finding(s), inputs under fuzz/artifacts/ (seed {seed})",
            findings.len()
        );
        ExitCode::FAILURE
    }
}
