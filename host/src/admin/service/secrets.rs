//! Storing, rotating and describing secret versions: a value checked
//! against its declared kind, and the grants a new version reaches.

use super::*;

pub(super) fn max_age(secs: Option<i64>) -> Result<MaxAgeChange, AdminError> {
    match secs {
        None => Ok(MaxAgeChange::Keep),
        Some(0) => Ok(MaxAgeChange::Clear),
        Some(s) if s > 0 => Ok(MaxAgeChange::Set(s)),
        Some(_) => Err(AdminError::bad_request(
            "`max_age_secs` must be positive (or 0 to remove the maximum age)",
        )),
    }
}

pub(super) fn grace(secs: Option<i64>) -> Result<Option<i64>, AdminError> {
    match secs {
        Some(s) if s <= 0 => Err(AdminError::bad_request(
            "`grace_secs` must be at least one second",
        )),
        other => Ok(other),
    }
}

/// Refuses a value that is not a `kind` key, without echoing it.
pub(super) fn check_kind(
    kind: KeyKind,
    value: &crate::crypto::secret_value::SecretValue,
) -> Result<(), AdminError> {
    kind.validate(value.expose()).map_err(|e| {
        let hint = if kind == KeyKind::Aes256 {
            "\nhint: give the 32 raw key bytes, not hex or base64 text (standard input loses one trailing newline; pass raw bytes with --from-file)"
        } else {
            ""
        };
        AdminError::new(ErrorKind::Unprocessable,
            format!("not a valid {kind} key: {e}; nothing was stored{hint}"),
        )
    })
}

/// A new value for a secret, as a put or a rotation asks for it.
pub(super) struct NewValue {
    value: WireValue,
    kind: KeyKind,
    grace: Option<i64>,
    max_age_secs: Option<i64>,
}

impl Admin {
    pub(super) fn put(
        &self,
        name: &str,
        body: PutSecret,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        valid_name("secret", name)?;
        let current_kind = match self.store.secret(name) {
            Ok(info) => Some(info.kind),
            Err(StoreError::UnknownSecret(_)) => None,
            Err(e) => return Err(from_store(e)),
        };
        let kind = body.kind.or(current_kind).unwrap_or_default();
        self.add_version(
            name,
            NewValue {
                value: body.value,
                kind,
                grace: None,
                max_age_secs: body.max_age_secs,
            },
            false,
            record,
        )
    }

    pub(super) fn rotate(
        &self,
        name: &str,
        body: RotateSecret,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        let kind = self.store.secret(name).map_err(from_store)?.kind;
        let grace = grace(body.grace_secs)?;
        self.add_version(
            name,
            NewValue {
                value: body.value,
                kind,
                grace,
                max_age_secs: body.max_age_secs,
            },
            true,
            record,
        )
    }

    /// Stores `new.value` as the new current version of `name` (only of an
    /// existing secret when `rotate`), after checking it is a `new.kind` key.
    pub(super) fn add_version(
        &self,
        name: &str,
        new: NewValue,
        rotate: bool,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        let NewValue {
            value,
            kind,
            grace,
            max_age_secs,
        } = new;
        let value = value.0;
        if value.is_empty() {
            return Err(AdminError::bad_request(
                "the value is empty; nothing was stored",
            ));
        }
        check_kind(kind, &value)?;
        let new = NewVersion {
            value: &value,
            kind,
            grace,
            max_age: max_age(max_age_secs)?,
        };
        let stored = if rotate {
            self.store.rotate_secret(name, &new, record)
        } else {
            self.store.put_secret(name, &new, record)
        }
        .map_err(from_store)?;
        self.change(
            name,
            stored.version,
            Some(value.len()),
            kind,
            stored.replaced,
            grace,
        )
    }

    /// Describes a new current version and the grants it reaches.
    pub(super) fn change(
        &self,
        name: &str,
        version: u32,
        bytes: Option<usize>,
        kind: KeyKind,
        replaced: Option<u32>,
        grace: Option<i64>,
    ) -> Result<VersionChange, AdminError> {
        let affected = match replaced {
            Some(_) => self.store.dependents(name).map_err(from_store)?,
            None => Vec::new(),
        };
        Ok(VersionChange {
            name: name.to_owned(),
            version,
            bytes,
            kind,
            replaced,
            grace_until: replaced.and(grace).map(|secs| now() + secs),
            affected,
        })
    }
}
