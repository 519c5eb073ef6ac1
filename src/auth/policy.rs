//! The one place that decides what an actor may do. Commands ask here; queries take a Scope.

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Manager,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Role {
        match s {
            "admin" => Role::Admin,
            "manager" => Role::Manager,
            _ => Role::User,
        }
    }
}

/// The logged-in account.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: i64,
    pub email: String,
    pub role: Role,
}

/// Which owners' records a query may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Own(i64),
    All,
}

impl Scope {
    /// The owner to filter by, or None for every owner.
    pub fn owner(self) -> Option<i64> {
        match self {
            Scope::Own(id) => Some(id),
            Scope::All => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Owned data (clients, messages, mailings, attempts, stats): users see their own,
/// managers read everyone's but change only their own, admins do everything.
pub fn scope(actor: &Actor, access: Access) -> Scope {
    match (actor.role, access) {
        (Role::Admin, _) => Scope::All,
        (Role::Manager, Access::Read) => Scope::All,
        _ => Scope::Own(actor.id),
    }
}

/// May the actor change a record it can see? Users only see their own; managers see every
/// record but change only their own (exit 3, since the record is visible to them).
pub fn check_write(actor: &Actor, owner_id: i64) -> Result<()> {
    if actor.role == Role::Admin || actor.id == owner_id {
        Ok(())
    } else {
        Err(Error::forbidden(
            "permission denied: managers have read-only access to other accounts' records",
        ))
    }
}

/// Actions beyond one's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// users list / block / unblock
    ManageUsers,
    /// mailings disable / enable
    ToggleMailings,
    /// create-user, create-manager, csu (once an administrator exists)
    CreateAccounts,
    /// users unlock: clear a login-throttle lock
    UnlockLogins,
}

pub fn require(actor: &Actor, cap: Capability) -> Result<()> {
    let allowed = match cap {
        Capability::ManageUsers | Capability::ToggleMailings => {
            matches!(actor.role, Role::Manager | Role::Admin)
        }
        Capability::CreateAccounts | Capability::UnlockLogins => actor.role == Role::Admin,
    };
    if allowed {
        Ok(())
    } else {
        let who = match cap {
            Capability::CreateAccounts | Capability::UnlockLogins => "an administrator",
            _ => "a manager or an administrator",
        };
        Err(Error::forbidden(format!(
            "permission denied: this needs {who}"
        )))
    }
}

/// May this manager/admin block that account? Nobody blocks an admin or themselves.
pub fn may_block(actor: &Actor, target_id: i64, target_role: Role) -> Result<()> {
    require(actor, Capability::ManageUsers)?;
    if target_id == actor.id {
        return Err(Error::forbidden(
            "permission denied: you cannot block yourself",
        ));
    }
    if target_role == Role::Admin {
        return Err(Error::forbidden(
            "permission denied: an administrator cannot be blocked",
        ));
    }
    if target_role == Role::Manager && actor.role != Role::Admin {
        return Err(Error::forbidden(
            "permission denied: only an administrator can block a manager",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role) -> Actor {
        Actor {
            id: 7,
            email: "a@example.com".into(),
            role,
        }
    }

    #[test]
    fn scopes_by_role() {
        assert_eq!(scope(&actor(Role::User), Access::Read), Scope::Own(7));
        assert_eq!(scope(&actor(Role::User), Access::Write), Scope::Own(7));
        assert_eq!(scope(&actor(Role::Manager), Access::Read), Scope::All);
        assert_eq!(scope(&actor(Role::Manager), Access::Write), Scope::Own(7));
        assert_eq!(scope(&actor(Role::Admin), Access::Write), Scope::All);
    }

    #[test]
    fn writes_to_others_records() {
        assert!(check_write(&actor(Role::Manager), 7).is_ok());
        assert!(check_write(&actor(Role::Manager), 8).is_err());
        assert!(check_write(&actor(Role::Admin), 8).is_ok());
        assert!(check_write(&actor(Role::User), 8).is_err());
    }

    #[test]
    fn capabilities_by_role() {
        assert!(require(&actor(Role::User), Capability::ManageUsers).is_err());
        assert!(require(&actor(Role::Manager), Capability::ManageUsers).is_ok());
        assert!(require(&actor(Role::Manager), Capability::CreateAccounts).is_err());
        assert!(require(&actor(Role::Admin), Capability::CreateAccounts).is_ok());
        assert!(require(&actor(Role::Manager), Capability::UnlockLogins).is_err());
        assert!(require(&actor(Role::Admin), Capability::UnlockLogins).is_ok());
    }

    #[test]
    fn blocking_rules() {
        let m = actor(Role::Manager);
        assert!(may_block(&m, 8, Role::User).is_ok());
        assert!(may_block(&m, 7, Role::User).is_err());
        assert!(may_block(&m, 8, Role::Admin).is_err());
        assert!(may_block(&m, 8, Role::Manager).is_err());
        assert!(may_block(&actor(Role::Admin), 8, Role::Manager).is_ok());
        assert!(may_block(&actor(Role::User), 8, Role::User).is_err());
    }
}
