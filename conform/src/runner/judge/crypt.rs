//! Encrypted images (Data encryption: the payload must be decrypted on
//! every read and encrypted on every write). An implementation that does
//! not hold the key (it is not given the case's passphrase, or does not
//! support the crypt method) is bound by `crypt.refuse-without-key`: a
//! clean refusal meets it, and opening the image and reading the payload
//! breaks it (what it reads is ciphertext, whatever it calls it). With the
//! key, `crypt.decrypt-on-read` ([`with_key`]): the model does not decrypt,
//! so the judge holds the reader to the half of the sentence it can see,
//! "never the stored ciphertext" (an adapter that reads the disk with the
//! key says which clusters came back as stored); a reader whose adapter
//! reads nothing with the key has it "not exercised".

use super::context::Context;
use crate::runner::judge::cause::Check;
use crate::runner::judge::outcome::Reasons;
use crate::runner::observation::Observation;
use spec_model::Obligation;

/// `crypt.decrypt-on-read` for an implementation holding the key whose
/// adapter read the encrypted disk with it
/// (QEMU's adapter, `adapters/qemu/decrypt.rs`): a cluster returned as
/// stored is a mismatch; a disk it could not read with the key is strict.
pub fn with_key(cx: &Context, obs: &Observation, r: &mut Reasons) {
    if cx.kind.is_none_or(|k| k.holds_key != Some(true)) {
        return;
    }
    let Some(g) = &obs.guest else { return };
    let o = Some(Obligation::CryptDecryptOnRead);
    for d in &g.mismatches {
        r.mismatch.push_for(o, Check::GuestData, None, d.clone());
    }
    for e in &g.read_errors {
        r.strict.push_for(o, Check::GuestRead, Some(e), e.clone());
    }
    if g.mismatch_count == 0 && g.read_error_count == 0 {
        r.pass.push_for(
            o,
            Check::Allowed,
            None,
            format!(
                "read {} allocated cluster(s) of the encrypted disk with its key; none came back as the stored ciphertext",
                g.ranges_compared
            ),
        );
    }
}

/// The header's `crypt_method` in words.
fn method(m: u32) -> String {
    match m {
        1 => "AES".to_owned(),
        2 => "LUKS".to_owned(),
        n => format!("method {n}"),
    }
}

/// Judges an encrypted image for an implementation without its key;
/// `true` when that decides the case (the verdict's own judgement does
/// not apply: nothing it could read is guest data).
pub fn keyless(cx: &Context, obs: &Observation, r: &mut Reasons) -> bool {
    if !cx.keyless_encrypted() {
        return false;
    }
    let m = method(cx.facts.map_or(0, |f| f.crypt_method));
    let o = Some(Obligation::CryptRefuseWithoutKey);
    if let Some(err) = obs.refusal() {
        r.pass.push_for(
            o,
            Check::Open,
            Some(err),
            format!("refused the {m}-encrypted image it holds no key for (Data encryption: the payload is only ever returned decrypted): {err}"),
        );
        return true;
    }
    let read = obs
        .guest
        .as_ref()
        .is_some_and(|g| g.ranges > g.read_error_count);
    if read {
        r.lenient.push_for(
            o,
            Check::Encrypted,
            None,
            format!("opened the {m}-encrypted image without its key and returned its payload as guest data: what it read is ciphertext (Data encryption: the payload must be decrypted on every read)"),
        );
    } else {
        r.pass.push_for(
            o,
            Check::Allowed,
            None,
            format!("opened the {m}-encrypted image without its key but read no payload"),
        );
    }
    true
}
