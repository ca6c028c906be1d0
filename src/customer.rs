//! The customer key and the fields Paystar holds for a customer.

use std::fmt;

/// A customer's identity: `(businessUnitSlug, accountNumber, subAccountNumber)`,
/// trimmed, compared exactly; a missing sub-account is `""` (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerKey {
    pub business_unit: String,
    pub account: String,
    pub sub_account: String,
}

/// A borrowed [`CustomerKey`]. Ordering is column by column, byte-wise, which is
/// exactly SQLite's `BINARY` ordering of the same three columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef<'a> {
    pub business_unit: &'a str,
    pub account: &'a str,
    pub sub_account: &'a str,
}

impl CustomerKey {
    pub fn new(business_unit: &str, account: &str, sub_account: &str) -> Self {
        Self {
            business_unit: business_unit.trim().to_owned(),
            account: account.trim().to_owned(),
            sub_account: sub_account.trim().to_owned(),
        }
    }

    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            business_unit: &self.business_unit,
            account: &self.account,
            sub_account: &self.sub_account,
        }
    }

    /// Parses the command-line form `ACCOUNT` or `ACCOUNT/SUBACCOUNT`.
    pub fn parse_cli(business_unit: &str, text: &str) -> Result<Self, String> {
        let (account, sub) = text.split_once('/').unwrap_or((text, ""));
        if account.trim().is_empty() {
            return Err(format!(
                "{text:?} is not a customer key; write ACCOUNT or ACCOUNT/SUBACCOUNT"
            ));
        }
        Ok(Self::new(business_unit, account, sub))
    }
}

impl KeyRef<'_> {
    pub fn to_owned(self) -> CustomerKey {
        CustomerKey {
            business_unit: self.business_unit.to_owned(),
            account: self.account.to_owned(),
            sub_account: self.sub_account.to_owned(),
        }
    }
}

/// `slug/account` or `slug/account/sub`: how keys are shown to people.
impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.business_unit, self.account)?;
        if !self.sub_account.is_empty() {
            write!(f, "/{}", self.sub_account)?;
        }
        Ok(())
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// The customer fields `Accounts.ManageCustomer` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
}

/// Owned [`Fields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldsBuf {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

impl FieldsBuf {
    pub fn as_ref(&self) -> Fields<'_> {
        Fields {
            first_name: &self.first_name,
            last_name: &self.last_name,
            email: &self.email,
        }
    }
}

impl Fields<'_> {
    pub fn to_owned(self) -> FieldsBuf {
        FieldsBuf {
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            email: self.email.to_owned(),
        }
    }
}
