//! Makes the eBPF object's BTF loadable: bpf-linker 0.10.1 leaves Rust's names on union types
//! (`MaybeUninit<u8>`, from aya-ebpf's globals and lockdown's parser), which the kernel refuses
//! ("Invalid name"), and without its BTF the kernel gets no function or line info (verifier logs
//! without source lines; no BPF global functions). Each such name is rewritten in place, same
//! length, as an identifier. The type walk is written here because aya-obj, which parses BTF,
//! keeps its type iteration private.

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _};

const BTF_KIND_UNION: u32 = 5;

/// Rewrites the names of union types in the `.BTF` section of the object at `path`.
pub(crate) fn sanitize_union_names(path: &std::path::Path) -> Result<()> {
    let mut bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (start, len) = {
        let file = object::File::parse(bytes.as_slice()).context("parsing the eBPF object")?;
        let Some(section) = file.section_by_name(".BTF") else {
            return Ok(());
        };
        let (start, len) = section.file_range().context(".BTF has no file range")?;
        (start as usize, len as usize)
    };
    let btf = &mut bytes[start..start + len];
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if u32::from(u16::from_le_bytes([btf[0], btf[1]])) != 0xeb9f {
        bail!("the .BTF section is not little-endian BTF");
    }
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let (str_off, str_len) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let mut names = Vec::new();
    let mut at = types;
    while at < types + type_len {
        let name_off = u32_at(btf, at) as usize;
        let info = u32_at(btf, at + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == BTF_KIND_UNION && name_off != 0 {
            names.push(name_off);
        }
        // The common header, then what each kind carries (include/uapi/linux/btf.h).
        at += 12
            + match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                2 | 7..=12 | 16 | 18 => 0,
                // A kind this walk does not know the size of: stop rather than misread the rest.
                _ => bail!("the .BTF section has a type of unknown kind {kind}"),
            };
    }
    for off in names {
        let mut i = strings + off;
        while i < strings + str_len && btf[i] != 0 {
            if !(btf[i].is_ascii_alphanumeric() || btf[i] == b'_') {
                btf[i] = b'_';
            }
            i += 1;
        }
    }
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))
}
