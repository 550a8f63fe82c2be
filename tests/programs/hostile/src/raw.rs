//! Direct canonical-ABI calls into `keyhole:secrets`, bypassing the
//! bindings, so the attacker picks the handle index, the pointers and the
//! string bytes. Each function returns what the guest saw; most of them
//! never return because the host traps the instance.
//!
//! Layouts (canonical ABI, 32-bit): `get` writes a `result<secret, error>`
//! to its return area: tag byte at 0, then at 4 either the handle (ok) or
//! the error's case byte, with its string's pointer at 8 and length at 12.
//! `hmac-sha256` writes a `result<list<u8>, error>` the same way, with the
//! list's pointer at 4 and length at 8 when it is ok.

#[link(wasm_import_module = "keyhole:secrets/secrets@0.1.1")]
unsafe extern "C" {
    #[link_name = "get"]
    fn raw_get(name: *const u8, len: usize, ret: *mut u8);
    #[link_name = "[method]secret.version"]
    fn raw_version(handle: u32) -> u32;
    #[link_name = "[method]secret.hmac-sha256"]
    fn raw_hmac(handle: u32, message: *const u8, len: usize, ret: *mut u8);
    #[link_name = "[resource-drop]secret"]
    fn raw_drop(handle: u32);
}

/// A return area with the alignment the ABI expects.
#[repr(C, align(8))]
struct ReturnArea([u8; 16]);

impl ReturnArea {
    fn new() -> Self {
        Self([0; 16])
    }

    fn word(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }
}

/// Opens `name` through the raw ABI: the handle index, or what was refused.
fn get_raw(name: &[u8]) -> Result<u32, String> {
    let mut ret = ReturnArea::new();
    // SAFETY: the pointer and length describe `name`; the return area is
    // 16 bytes, aligned, as the ABI requires.
    unsafe { raw_get(name.as_ptr(), name.len(), ret.0.as_mut_ptr()) };
    if ret.0[0] == 0 {
        Ok(ret.word(4))
    } else {
        Err(format!("refused (case {})", ret.0[4]))
    }
}

/// `get` with a binding name that is not UTF-8: lifting it must trap.
pub fn get_with_bytes(name: &[u8]) -> String {
    match get_raw(name) {
        Ok(handle) => format!("opened handle {handle}"),
        Err(e) => e,
    }
}

/// Calls `version` on whatever handle index the caller names.
pub fn version_of(index: u32) -> String {
    // SAFETY: none needed by the guest; the host validates the index.
    let version = unsafe { raw_version(index) };
    format!("handle {index} is version {version}")
}

/// Drops whatever handle index the caller names.
pub fn drop_index(index: u32) -> String {
    // SAFETY: as above; the host validates the index.
    unsafe { raw_drop(index) };
    format!("dropped {index}")
}

/// Opens `binding`, drops it, then uses the index again.
pub fn stale(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => {
            drop_index(handle);
            version_of(handle)
        }
        Err(e) => e,
    }
}

/// Opens `binding` and drops the handle twice.
pub fn double_drop(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => {
            drop_index(handle);
            drop_index(handle)
        }
        Err(e) => e,
    }
}

/// Opens `binding` and answers with the handle index, never dropping it,
/// so a later request can try to use the index.
pub fn keep(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => format!("{handle}"),
        Err(e) => e,
    }
}

/// Opens `binding` and uses the handle index in the same request, which
/// must work (the control for [`keep`]).
pub fn keep_and_use(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => version_of(handle),
        Err(e) => e,
    }
}

/// `hmac-sha256` with a message pointer past the end of linear memory.
pub fn hmac_out_of_bounds_input(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => {
            let mut ret = ReturnArea::new();
            // SAFETY: the guest passes a bogus pointer on purpose; the host
            // bounds-checks it against linear memory.
            unsafe {
                raw_hmac(
                    handle,
                    0xfff0_0000usize as *const u8,
                    0x0008_0000,
                    ret.0.as_mut_ptr(),
                )
            };
            format!("hmac answered (tag {})", ret.0[0])
        }
        Err(e) => e,
    }
}

/// `hmac-sha256` whose return area lies past the end of linear memory:
/// the host computes the tag, then cannot write it back.
pub fn hmac_out_of_bounds_result(binding: &str) -> String {
    match get_raw(binding.as_bytes()) {
        Ok(handle) => {
            let message = b"hostile";
            // SAFETY: the bogus return pointer is the point of the test.
            unsafe {
                raw_hmac(
                    handle,
                    message.as_ptr(),
                    message.len(),
                    0xffff_fff0usize as *mut u8,
                )
            };
            "hmac answered".to_owned()
        }
        Err(e) => e,
    }
}
