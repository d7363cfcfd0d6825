//! What the nemesis can do and to whom: the fault kinds (`--faults` names them), the
//! processes of the production shape, and the claims that keep two overlapping faults
//! off the same process (a kill during a pause of the same node would test the harness).

use serde::Serialize;
use std::fmt;

/// The kinds of fault the nemesis can inject (`--faults` names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of one process, then a restart.
    Kill,
    /// SIGSTOP of one process, then SIGCONT.
    Pause,
    /// One service cut from NATS, or one NATS node from the other two.
    Partition,
    /// The same links delayed or stalled instead of cut.
    Slow,
    /// Postgres read-only for a while, or restarted.
    Pg,
    /// One ingest node restarted under `libfaketime`, minutes off, then back.
    Skew,
    /// All three NATS nodes killed -9 at once, then restarted.
    NatsCrash,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Slow,
        FaultKind::Pg,
        FaultKind::Skew,
        FaultKind::NatsCrash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Slow => "slow",
            FaultKind::Pg => "pg",
            FaultKind::Skew => "skew",
            FaultKind::NatsCrash => "nats-crash",
        }
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {name:?} (known: {})", known.join(", "))
            })
    }
}

/// Which of the three services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Ingest,
    Persister,
    Fanout,
}

/// One service process: its role and its index among that role's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub Role, pub usize);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.0 {
            Role::Ingest => "ingest",
            Role::Persister => "persister",
            Role::Fanout => "fanout",
        };
        write!(f, "{role}-{}", self.1)
    }
}

/// A process the nemesis can hit; also what a fault claims, so that two overlapping
/// faults never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Service(ServiceId),
    NatsNode(usize),
    Postgres,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(id) => id.fmt(f),
            Target::NatsNode(node) => write!(f, "nats-{node}"),
            Target::Postgres => f.write_str("postgres"),
        }
    }
}

/// How many of each process the soak runs: the production shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub ingest: usize,
    pub persisters: usize,
    pub fanouts: usize,
    pub nats_nodes: usize,
}

impl Shape {
    pub const PRODUCTION: Shape = Shape {
        ingest: 2,
        persisters: 2,
        fanouts: 2,
        nats_nodes: crate::nats_cluster::NODES,
    };

    pub fn services(&self) -> Vec<ServiceId> {
        let of = |role, n| (0..n).map(move |i| ServiceId(role, i));
        of(Role::Ingest, self.ingest)
            .chain(of(Role::Persister, self.persisters))
            .chain(of(Role::Fanout, self.fanouts))
            .collect()
    }

    /// Every process: the services, the NATS nodes, Postgres.
    pub fn processes(&self) -> Vec<Target> {
        let services = self.services().into_iter().map(Target::Service);
        let nodes = (0..self.nats_nodes).map(Target::NatsNode);
        services.chain(nodes).chain([Target::Postgres]).collect()
    }

    /// What can lose or slow its NATS links: a service, or a NATS node (its routes).
    pub fn linked(&self) -> Vec<Target> {
        let services = self.services().into_iter().map(Target::Service);
        services
            .chain((0..self.nats_nodes).map(Target::NatsNode))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_parse_back_and_unknown_ones_are_refused() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        let refused = "power".parse::<FaultKind>().expect_err("unknown");
        assert!(refused.contains("nats-crash"), "{refused}");
    }

    #[test]
    fn the_production_shape_has_ten_processes_and_nine_with_nats_links() {
        let shape = Shape::PRODUCTION;
        assert_eq!(shape.processes().len(), 10);
        assert_eq!(shape.linked().len(), 9);
        assert_eq!(
            Target::Service(ServiceId(Role::Persister, 1)).to_string(),
            "persister-1"
        );
    }
}
