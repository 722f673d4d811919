//! CSI names as Scoria names. The CO's name (the idempotency key of
//! CreateVolume and CreateSnapshot) becomes the Scoria name when Scoria can
//! hold it (at most 255 characters, no control characters); otherwise a name
//! derived from it (`csi-<UUIDv5 of the name>`), the same each time. Volumes
//! also carry the CO's name in their metadata when it fits, and every create
//! goes with a request id derived from the name, so two racing creates of one
//! name make one volume.

use uuid::Uuid;

/// The metadata key holding the CO's name of a volume.
pub const NAME_KEY: &str = "csi.block.scoria.dev/name";
/// The metadata key marking a volume as made by this plugin.
pub const CREATED_BY_KEY: &str = "csi.block.scoria.dev/created-by";
/// Scoria's longest name (and metadata value).
const MAX_CHARS: usize = 255;

/// The UUIDv5 namespace of the plugin's derived names.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_1a0e_5a3b_4d4e_9f0e_7b1c_2d3e_4f50);

/// Whether Scoria can store `text` as a name or metadata value as it is.
pub fn fits(text: &str) -> bool {
    text.chars().count() <= MAX_CHARS && !text.chars().any(char::is_control)
}

/// The Scoria name of the resource the CO calls `name`.
pub fn scoria_name(name: &str) -> String {
    if fits(name) {
        name.to_owned()
    } else {
        format!("csi-{}", Uuid::new_v5(&NAMESPACE, name.as_bytes()))
    }
}

/// The request id (CreateVolume's idempotency key) of a create of `name`;
/// `attempt` > 0 for a new volume under a name whose earlier one was deleted.
pub fn request_id(name: &str, attempt: u32) -> String {
    let id = Uuid::new_v5(&NAMESPACE, name.as_bytes());
    if attempt == 0 {
        format!("csi-{id}")
    } else {
        format!("csi-{id}-{attempt}")
    }
}

/// The CO's name must not hold the control characters the spec bans
/// (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F).
pub fn banned_char(name: &str) -> Option<char> {
    name.chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// `id` as Scoria writes ids (a hyphenated UUID), or `None` when it cannot be
/// one of Scoria's (then nothing has that id: NOT_FOUND, or OK for a delete).
pub fn scoria_id(id: &str) -> Option<String> {
    Uuid::try_parse(id).ok().map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scoria_can_hold_stay_and_others_are_derived_stably() {
        assert_eq!(scoria_name("pvc-1234"), "pvc-1234");
        let long = "x".repeat(300);
        assert_eq!(scoria_name(&long), scoria_name(&long));
        assert!(scoria_name(&long).starts_with("csi-") && fits(&scoria_name(&long)));
        assert_ne!(scoria_name("a\tb"), "a\tb");
        assert_eq!(banned_char("a\tb"), None);
        assert_eq!(banned_char("a\u{1}b"), Some('\u{1}'));
        assert_ne!(request_id("a", 0), request_id("a", 1));
        assert_eq!(scoria_id("not-a-uuid"), None);
    }
}
