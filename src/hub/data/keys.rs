//! Keyspace operations: keys. (Filled in as the RESP command files move their logic here.)
