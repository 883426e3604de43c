//! Keyspace operations: zsets. (Filled in as the RESP command files move their logic here.)
