//! The plan: inventory + playbooks turned into a DAG of tasks (node, layer,
//! step), with the cross-node ordering a cluster needs. Pure: touches no host.
