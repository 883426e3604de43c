//! Keyspace operations: sets. (Filled in as the RESP command files move their logic here.)
