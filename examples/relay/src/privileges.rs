//! Running as root: the relay binds its listen ports, then gives root up for
//! the configured `user` (Postfix's `mail_owner`) before it accepts a
//! connection or reads anything from the network.
//!
//! [`Account::prepare`] looks the user (and group) up and gives the state
//! directory tree to it while still root; [`Account::switch_to`] sets the supplementary groups, the
//! group and the user, in that order, and checks that root cannot be
//! regained. Everything the relay writes afterwards (spool, certificates,
//! MTA-STS cache, TLS-RPT state) is created by that user.
//!
//! [`refuse_root`] is the binary's rule: as root without `user`, the relay
//! does not start unless `allow_root = true`.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use rustix::fs;

use crate::config::Config;

/// Why privileges could not be dropped, or the relay must not run as root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// No such user.
    #[error("`user`: no user named {0:?} on this system")]
    UnknownUser(String),
    /// No such group.
    #[error("`group`: no group named {0:?} on this system")]
    UnknownGroup(String),
    /// The user or group is root's: dropping to it would drop nothing.
    #[error("`{key}`: {name:?} has ID 0 (root's); name an unprivileged account")]
    RootAccount {
        /// `user` or `group`.
        key: &'static str,
        /// The name configured.
        name: String,
    },
    /// The user database could not be read.
    #[error("looking up {what}: {source}")]
    Lookup {
        /// What was looked up.
        what: String,
        /// The error.
        source: nix::Error,
    },
    /// The relay runs as another user than `user` and is not root, so it
    /// cannot switch.
    #[error(
        "`user = {user:?}`: the relay runs as UID {uid}, not as root nor as {user:?}, \
         and cannot switch to it"
    )]
    CannotSwitch {
        /// The configured user.
        user: String,
        /// The current user ID.
        uid: u32,
    },
    /// Root without `user` (see [`refuse_root`]).
    #[error(
        "refusing to run as root on a network address: set `user` (the unprivileged account the \
         relay switches to once its ports are bound, like Postfix's mail_owner), or set \
         `allow_root = true` to run as root on purpose"
    )]
    Root,
    /// A step of the switch failed.
    #[error("cannot switch to user {user:?}: {step}: {source}")]
    Switch {
        /// The configured user.
        user: String,
        /// The call that failed.
        step: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// After the switch, root could be regained, or the IDs are not those
    /// asked for.
    #[error("privileges not dropped for user {user:?}: {what}")]
    NotDropped {
        /// The configured user.
        user: String,
        /// What was found.
        what: String,
    },
    /// The state directory (or an entry in it) could not be given to the user.
    #[error("giving {} to user {user:?}: {source}", path.display())]
    Chown {
        /// The configured user.
        user: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Once switched, the user cannot open the state directory (a parent
    /// directory it may not enter, most often).
    #[error(
        "user {user:?} cannot open the state directory {}: {source} (its parent directories \
         must be searchable by that user)",
        path.display()
    )]
    StateDir {
        /// The configured user.
        user: String,
        /// The state directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A directory of the state tree: opened without following a symbolic link.
const DIR_FLAGS: fs::OFlags = fs::OFlags::RDONLY
    .union(fs::OFlags::DIRECTORY)
    .union(fs::OFlags::NOFOLLOW)
    .union(fs::OFlags::CLOEXEC);

/// A regular file of the state tree: opened for its descriptor only, never
/// following a symbolic link nor blocking.
const FILE_FLAGS: fs::OFlags = fs::OFlags::RDONLY
    .union(fs::OFlags::NOFOLLOW)
    .union(fs::OFlags::NONBLOCK)
    .union(fs::OFlags::NOCTTY)
    .union(fs::OFlags::CLOEXEC);

/// The relay's own account (`user`, `group`), looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// Its user ID.
    pub uid: Uid,
    /// The group: `group`, else the user's primary group.
    pub gid: Gid,
    /// The supplementary groups: the user's (from the group database) when
    /// `group` is not set, else `group` alone.
    pub groups: Vec<Gid>,
}

impl Account {
    /// Looks up `user` and `group` of `config`; `None` when `user` is not
    /// set.
    pub fn from_config(config: &Config) -> Result<Option<Self>, PrivilegeError> {
        let Some(name) = &config.user else {
            return Ok(None);
        };
        let lookup = |what: String| move |source| PrivilegeError::Lookup { what, source };
        let user = User::from_name(name)
            .map_err(lookup(format!("user {name:?}")))?
            .ok_or_else(|| PrivilegeError::UnknownUser(name.clone()))?;
        if user.uid.is_root() {
            return Err(PrivilegeError::RootAccount {
                key: "user",
                name: name.clone(),
            });
        }
        let (gid, groups) = match &config.group {
            Some(group) => {
                let found = Group::from_name(group)
                    .map_err(lookup(format!("group {group:?}")))?
                    .ok_or_else(|| PrivilegeError::UnknownGroup(group.clone()))?;
                (found.gid, vec![found.gid])
            }
            None => {
                // The name comes from the user database: it has no NUL.
                let c_name = CString::new(name.as_bytes())
                    .map_err(|_| PrivilegeError::UnknownUser(name.clone()))?;
                let groups = nix::unistd::getgrouplist(&c_name, user.gid)
                    .map_err(lookup(format!("the groups of user {name:?}")))?;
                (user.gid, groups)
            }
        };
        if gid.as_raw() == 0 {
            return Err(PrivilegeError::RootAccount {
                key: "group",
                name: config.group.clone().unwrap_or_else(|| name.clone()),
            });
        }
        Ok(Some(Self {
            name: name.clone(),
            uid: user.uid,
            gid,
            groups,
        }))
    }

    /// What this process must do for the account: `Ok(true)` when it runs
    /// as root and must switch, `Ok(false)` when it already runs as the
    /// account (started by systemd with `User=`), an error otherwise.
    pub fn must_switch(&self) -> Result<bool, PrivilegeError> {
        let uid = Uid::effective();
        if uid.is_root() {
            Ok(true)
        } else if uid == self.uid {
            Ok(false)
        } else {
            Err(PrivilegeError::CannotSwitch {
                user: self.name.clone(),
                uid: uid.as_raw(),
            })
        }
    }

    /// Gives `dir` and the directories and regular files in it to the
    /// account (as root, before [`Account::switch_to`]).
    ///
    /// The directory belongs to the account, which may have put anything in
    /// it: nothing is followed or changed by name. Each directory is opened
    /// without following a symbolic link and changed through its descriptor,
    /// its entries looked up relative to it; a regular file likewise, and
    /// only when it has no other hard link (else changing it could give away
    /// a file elsewhere). Symbolic links, other kinds of files and files with
    /// several links are left as they are, with a warning.
    pub fn take_state_dir(&self, dir: &Path) -> Result<(), PrivilegeError> {
        let top = fs::open(dir, DIR_FLAGS, fs::Mode::empty()).map_err(self.chown_err(dir))?;
        self.take(&top, dir)
    }

    fn chown_err(&self, path: &Path) -> impl FnOnce(rustix::io::Errno) -> PrivilegeError {
        let (user, path) = (self.name.clone(), path.to_owned());
        move |e| PrivilegeError::Chown {
            user,
            path,
            source: e.into(),
        }
    }

    /// Gives the directory open as `dir` (at `path`) and what it holds.
    fn take(&self, dir: &OwnedFd, path: &Path) -> Result<(), PrivilegeError> {
        let (uid, gid) = (
            Some(fs::Uid::from_raw(self.uid.as_raw())),
            Some(fs::Gid::from_raw(self.gid.as_raw())),
        );
        fs::fchown(dir, uid, gid).map_err(self.chown_err(path))?;
        let mut entries = fs::Dir::read_from(dir).map_err(self.chown_err(path))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(self.chown_err(path))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let kind = fs::statat(dir, name, fs::AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| fs::FileType::from_raw_mode(st.st_mode))
                .map_err(self.chown_err(&child))?;
            match kind {
                fs::FileType::Directory => {
                    let sub = fs::openat(dir, name, DIR_FLAGS, fs::Mode::empty())
                        .map_err(self.chown_err(&child))?;
                    self.take(&sub, &child)?;
                }
                fs::FileType::RegularFile => {
                    let file = fs::openat(dir, name, FILE_FLAGS, fs::Mode::empty())
                        .map_err(self.chown_err(&child))?;
                    let st = fs::fstat(&file).map_err(self.chown_err(&child))?;
                    if fs::FileType::from_raw_mode(st.st_mode) == fs::FileType::RegularFile
                        && st.st_nlink == 1
                    {
                        fs::fchown(&file, uid, gid).map_err(self.chown_err(&child))?;
                    } else {
                        tracing::warn!(path = %child.display(), "left as it is: a file with several hard links");
                    }
                }
                _ => {
                    tracing::warn!(path = %child.display(), "left as it is: not a directory nor a regular file");
                }
            }
        }
        Ok(())
    }

    /// The account the relay switches to, its state directory already
    /// given to it: `None` when `user` is not set, or the relay already runs
    /// as that user.
    pub fn prepare(config: &Config) -> Result<Option<Self>, PrivilegeError> {
        match Self::from_config(config)? {
            Some(account) if account.must_switch()? => {
                account.take_state_dir(&config.state_dir)?;
                Ok(Some(account))
            }
            _ => Ok(None),
        }
    }

    /// Switches this process (every thread) to the account: supplementary
    /// groups, group, user, in that order; then checks the IDs, that
    /// `setuid(0)` fails, and that the account can open `state_dir`.
    pub fn switch_to(&self, state_dir: &Path) -> Result<(), PrivilegeError> {
        let fail = |step| {
            move |source| PrivilegeError::Switch {
                user: self.name.clone(),
                step,
                source,
            }
        };
        nix::unistd::setgroups(&self.groups).map_err(fail("setgroups"))?;
        nix::unistd::setgid(self.gid).map_err(fail("setgid"))?;
        nix::unistd::setuid(self.uid).map_err(fail("setuid"))?;
        let not_dropped = |what: String| PrivilegeError::NotDropped {
            user: self.name.clone(),
            what,
        };
        let ids = (
            Uid::current(),
            Uid::effective(),
            Gid::current(),
            Gid::effective(),
        );
        if ids != (self.uid, self.uid, self.gid, self.gid) {
            return Err(not_dropped(format!(
                "uid {}/{} gid {}/{}",
                ids.0, ids.1, ids.2, ids.3
            )));
        }
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(not_dropped("setuid(0) succeeded".into()));
        }
        std::fs::read_dir(state_dir)
            .map(drop)
            .map_err(|source| PrivilegeError::StateDir {
                user: self.name.clone(),
                path: state_dir.to_owned(),
                source,
            })
    }
}

/// The binary's rule: running as root with a listen address off loopback
/// (where hostile peers are) needs `user` (the relay then switches to it) or
/// an explicit `allow_root = true`. A relay that listens on loopback only —
/// the embedded defaults, a first try on a workstation — runs as root with
/// the warning [`root_warning`]. [`crate::relay::Relay::start`] itself does
/// not apply the rule, so that a program (or a test) embedding the relay
/// decides for itself.
pub fn refuse_root(config: &Config) -> Result<(), PrivilegeError> {
    let loopback_only = config.listen.iter().all(|a| a.ip().is_loopback());
    if Uid::effective().is_root() && config.user.is_none() && !config.allow_root && !loopback_only {
        Err(PrivilegeError::Root)
    } else {
        Ok(())
    }
}

/// What to say when the relay runs as root without `user` or `allow_root`
/// (on loopback only, which [`refuse_root`] lets through).
pub fn root_warning(config: &Config) -> Option<&'static str> {
    (Uid::effective().is_root() && config.user.is_none() && !config.allow_root).then_some(
        "running as root, on loopback only: set `user` (or `allow_root = true`) before listening \
         on a network address",
    )
}

/// For the commands that write into the state directory (`cert import`,
/// `queue hold`, …): run as root with `user` set, they switch to it first,
/// so that what they write belongs to the relay's account as what the relay
/// writes does. Input files are read before.
pub fn switch_for_command(config: &Config) -> Result<(), PrivilegeError> {
    match Account::from_config(config)? {
        Some(account) if Uid::effective().is_root() => account.switch_to(&config.state_dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).unwrap()
    }

    #[test]
    fn accounts_are_looked_up_and_root_refused() {
        assert_eq!(Account::from_config(&Config::default()).unwrap(), None);
        let err = Account::from_config(&config("user = \"no-such-user-postern\"")).unwrap_err();
        assert!(matches!(err, PrivilegeError::UnknownUser(_)), "{err}");
        let err = Account::from_config(&config("user = \"root\"")).unwrap_err();
        assert!(err.to_string().contains("ID 0"), "{err}");
        // `nobody` exists on every Unix system this is built on.
        let err = Account::from_config(&config(
            "user = \"nobody\"\ngroup = \"no-such-group-postern\"",
        ))
        .unwrap_err();
        assert!(matches!(err, PrivilegeError::UnknownGroup(_)), "{err}");
        let nobody = Account::from_config(&config("user = \"nobody\""))
            .unwrap()
            .unwrap();
        assert!(!nobody.uid.is_root());
        assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
        let root_group = Group::from_gid(Gid::from_raw(0)).unwrap().unwrap().name;
        let err = Account::from_config(&config(&format!(
            "user = \"nobody\"\ngroup = \"{root_group}\""
        )))
        .unwrap_err();
        assert!(err.to_string().contains("`group`"), "{err}");
    }

    #[test]
    fn root_needs_a_user_or_allow_root() {
        let root = Uid::effective().is_root();
        let exposed = config("listen = [\"192.0.2.1:25\"]");
        let err = refuse_root(&exposed);
        assert_eq!(err.is_err(), root);
        if root {
            assert!(err.unwrap_err().to_string().contains("allow_root"));
        }
        // The embedded defaults listen on loopback only: allowed, with a warning.
        assert!(refuse_root(&Config::default()).is_ok());
        assert_eq!(root_warning(&Config::default()).is_some(), root);
        assert!(root_warning(&config("allow_root = true")).is_none());
        assert!(refuse_root(&config("allow_root = true")).is_ok());
        assert!(refuse_root(&config("user = \"nobody\"")).is_ok());
    }
}
