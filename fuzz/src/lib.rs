//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz_targets/`, libFuzzer,
//! nightly) and the stable smoke driver (`src/smoke.rs`).
//!
//! Each target is a plain `fn(&[u8]) -> bool`: it panics when a property fails, and returns
//! whether the parser accepted the input (the smoke driver keeps accepted mutants as seeds for
//! further mutation). Properties are round trips wherever an encoder exists (parse → encode →
//! parse → equal); otherwise "never panics, and what parses reads back consistently".

pub mod targets;

/// A named fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// The name: the cargo-fuzz binary, and the folder under `seeds/` and `corpus/`.
    pub name: &'static str,
    /// The body.
    pub check: fn(&[u8]) -> bool,
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "base64",
        check: targets::base64,
    },
    Target {
        name: "cert",
        check: targets::cert,
    },
    Target {
        name: "serverkeygen",
        check: targets::serverkeygen,
    },
    Target {
        name: "cms_signed",
        check: targets::cms_signed,
    },
    Target {
        name: "csr",
        check: targets::csr,
    },
    Target {
        name: "csrattrs",
        check: targets::csrattrs,
    },
    Target {
        name: "eap",
        check: targets::eap,
    },
    Target {
        name: "identity",
        check: targets::identity,
    },
    Target {
        name: "names",
        check: targets::names,
    },
    Target {
        name: "pem",
        check: targets::pem,
    },
    Target {
        name: "pkcs7",
        check: targets::pkcs7,
    },
    Target {
        name: "radius",
        check: targets::radius,
    },
    Target {
        name: "rfc3339",
        check: targets::rfc3339,
    },
    Target {
        name: "teap",
        check: targets::teap,
    },
    Target {
        name: "voucher",
        check: targets::voucher,
    },
    Target {
        name: "xfcc",
        check: targets::xfcc,
    },
];
