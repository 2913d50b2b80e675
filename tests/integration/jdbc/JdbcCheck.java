// Drives shardgate with the PostgreSQL JDBC driver for tests/integration/test_jdbc.py, one scenario per run.

import java.math.BigDecimal;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.OffsetDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.postgresql.PGResultSetMetaData;

/**
 * Usage: JdbcCheck SCENARIO JDBC_URL USER PASSWORD [ARGS...]
 *
 * <p>Each scenario prints what it saw as key=value lines on stdout; the pytest side asserts on them.
 * A check that fails inside the program prints "fail=..." and the program ends with "result=failed"
 * and exit status 1; an unexpected SQLException prints "error_sqlstate=" and "error_message=" and
 * exits 1; bad usage exits 2. "result=ok" and exit status 0 mean every check passed.
 */
public final class JdbcCheck {
    private static String url;
    private static String user;
    private static String password;
    private static final AtomicInteger failures = new AtomicInteger();

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: JdbcCheck SCENARIO JDBC_URL USER PASSWORD [ARGS...]");
            System.exit(2);
        }
        url = args[1];
        user = args[2];
        password = args[3];
        String[] rest = Arrays.copyOfRange(args, 4, args.length);
        try {
            switch (args[0]) {
                case "prepared" -> prepared(rest);
                case "binary" -> binary(rest);
                case "batch" -> batch(rest);
                case "batch_atomic" -> batchAtomic(rest);
                case "txn" -> txn(rest);
                case "multishard" -> multishard(rest);
                case "multishard_txn" -> multishardTxn(rest);
                case "unsupported" -> unsupported(rest);
                case "metadata" -> metadata(rest);
                case "settings" -> settings(rest);
                default -> {
                    System.err.println("unknown scenario " + args[0]);
                    System.exit(2);
                }
            }
        } catch (SQLException e) {
            out("error_sqlstate", e.getSQLState());
            out("error_message", e.getMessage());
            e.printStackTrace();
            System.out.flush();
            System.exit(1);
        }
        out("result", failures.get() == 0 ? "ok" : "failed");
        System.out.flush();
        System.exit(failures.get() == 0 ? 0 : 1);
    }

    // ------------------------------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------------------------------

    static void out(String key, Object value) {
        // One line per value, whatever it holds (messages may contain newlines).
        String text = String.valueOf(value).replace('\n', ' ').replace('\r', ' ');
        synchronized (System.out) {
            System.out.println(key + "=" + text);
        }
    }

    static boolean check(boolean ok, String what) {
        if (!ok) {
            failures.incrementAndGet();
            out("fail", what);
        }
        return ok;
    }

    static Connection connect(Properties extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("ApplicationName", "sg_jdbc");
        if (extra != null) {
            p.putAll(extra);
        }
        return DriverManager.getConnection(url, p);
    }

    static Properties props(String... kv) {
        Properties p = new Properties();
        for (int i = 0; i + 1 < kv.length; i += 2) {
            p.setProperty(kv[i], kv[i + 1]);
        }
        return p;
    }

    /** The single value of a query that must return exactly one row. */
    static String one(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            check(rs.next(), sql + ": no row");
            String v = rs.getString(1);
            check(!rs.next(), sql + ": more than one row");
            return v;
        }
    }

    /** The single value of a keyed query (one long parameter), or null when it found no row. */
    static String oneByKey(Connection conn, String sql, long key) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            ps.setLong(1, key);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    return null;
                }
                String v = rs.getString(1);
                check(!rs.next(), sql + " [" + key + "]: more than one row");
                return v;
            }
        }
    }

    /** The SQLSTATE a statement fails with, or "none" when it succeeds. */
    static String sqlstateOf(Connection conn, String sql) {
        try (Statement st = conn.createStatement()) {
            st.execute(sql);
            return "none";
        } catch (SQLException e) {
            out("message_of_" + e.getSQLState(), e.getMessage());
            return e.getSQLState();
        }
    }

    // ------------------------------------------------------------------------------------------
    // prepared CLIENTS EXECUTIONS MAX_ID: server-side prepared statements from several clients at once
    // ------------------------------------------------------------------------------------------

    static final String SQL_A = "SELECT name FROM users WHERE id = ?";
    // Another statement (other columns, other parameters) that also says which backend ran it.
    static final String SQL_B =
            "SELECT id, name, pg_backend_pid(), inet_server_port() FROM users WHERE id = ? AND name = ?";

    static void prepared(String[] a) throws Exception {
        int clients = Integer.parseInt(a[0]);
        int executions = Integer.parseInt(a[1]);
        long maxId = Long.parseLong(a[2]);
        AtomicInteger rows = new AtomicInteger();
        AtomicInteger wrong = new AtomicInteger();
        AtomicInteger errors = new AtomicInteger();
        AtomicInteger minPrepared = new AtomicInteger(Integer.MAX_VALUE);
        Map<String, Set<Integer>> clientsByBackend = new ConcurrentHashMap<>();
        CyclicBarrier start = new CyclicBarrier(clients);
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Future<?>> futures = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            final int client = c;
            futures.add(pool.submit(() -> {
                try (Connection conn = connect(null);
                        PreparedStatement psA = conn.prepareStatement(SQL_A);
                        PreparedStatement psB = conn.prepareStatement(SQL_B)) {
                    start.await(30, TimeUnit.SECONDS);
                    for (int i = 0; i < executions; i++) {
                        long id = 1 + Math.floorMod(client * 7919L + i * 31L, maxId);
                        String name = "user" + id;
                        // Even clients run A first and odd ones B first, so pgjdbc's S_1, S_2 name
                        // different texts (with different columns) on different clients.
                        for (int k = 0; k < 2; k++) {
                            if ((k == 0) == (client % 2 == 0)) {
                                psA.setLong(1, id);
                                try (ResultSet rs = psA.executeQuery()) {
                                    boolean ok = rs.next() && name.equals(rs.getString(1)) && !rs.next();
                                    if (!check(ok, "client " + client + " A #" + i + " id " + id)) {
                                        wrong.incrementAndGet();
                                    }
                                }
                            } else {
                                psB.setLong(1, id);
                                psB.setString(2, name);
                                try (ResultSet rs = psB.executeQuery()) {
                                    boolean ok = rs.next() && rs.getLong(1) == id && name.equals(rs.getString(2));
                                    if (ok) {
                                        String backend = rs.getInt(4) + ":" + rs.getInt(3);
                                        clientsByBackend.computeIfAbsent(backend, x -> ConcurrentHashMap.newKeySet())
                                                .add(client);
                                        ok = !rs.next();
                                    }
                                    if (!check(ok, "client " + client + " B #" + i + " id " + id)) {
                                        wrong.incrementAndGet();
                                    }
                                }
                            }
                            rows.incrementAndGet();
                        }
                    }
                    // Meaningful on plain Postgres only (through a pool the session may be elsewhere).
                    int prepared = Integer.parseInt(one(conn, "SELECT count(*) FROM pg_prepared_statements"));
                    minPrepared.accumulateAndGet(prepared, Math::min);
                } catch (Exception e) {
                    errors.incrementAndGet();
                    String state = e instanceof SQLException se ? se.getSQLState() : e.getClass().getName();
                    out("client_error", "client " + client + ": " + state + " " + e.getMessage());
                }
                return null;
            }));
        }
        for (Future<?> f : futures) {
            f.get(120, TimeUnit.SECONDS);
        }
        pool.shutdown();
        long shared = clientsByBackend.values().stream().filter(s -> s.size() > 1).count();
        out("clients", clients);
        out("rows", rows.get());
        out("wrong", wrong.get());
        out("errors", errors.get());
        out("backends", clientsByBackend.size());
        out("shared_backends", shared);
        out("min_prepared_in_session", minPrepared.get());
        check(errors.get() == 0, "clients failed");
    }

    // ------------------------------------------------------------------------------------------
    // binary TABLE READS: exact round trips of int8, numeric, timestamptz, text, boolean, bytea, float8
    // ------------------------------------------------------------------------------------------

    record Row(long id, BigDecimal amount, OffsetDateTime ts, String label, Boolean flag, byte[] data, Double ratio) {
        boolean same(Row o) {
            return id == o.id && Objects.equals(amount, o.amount)
                    && (ts == null ? o.ts == null : o.ts != null && ts.isEqual(o.ts))
                    && Objects.equals(label, o.label) && Objects.equals(flag, o.flag)
                    && Arrays.equals(data, o.data)
                    && (ratio == null ? o.ratio == null : o.ratio != null && Double.compare(ratio, o.ratio) == 0);
        }

        @Override
        public String toString() {
            return id + "|" + (amount == null ? "null" : amount.toPlainString()) + "|" + ts + "|" + label + "|" + flag
                    + "|" + (data == null ? "null" : data.length + " bytes") + "|" + ratio;
        }
    }

    static byte[] allBytes() {
        byte[] b = new byte[256];
        for (int i = 0; i < 256; i++) {
            b[i] = (byte) i;
        }
        return b;
    }

    static final List<Row> ROWS = List.of(
            new Row(Long.MAX_VALUE, new BigDecimal("12345678901234567890.123456789012"),
                    OffsetDateTime.of(2024, 2, 29, 13, 14, 15, 123456000, ZoneOffset.UTC), "héllo ✓ 日本", true,
                    allBytes(), 0.1 + 0.2),
            new Row(Long.MIN_VALUE, new BigDecimal("-0.000000001"),
                    OffsetDateTime.of(1969, 12, 31, 23, 59, 59, 999999000, ZoneOffset.ofHoursMinutes(5, 30)),
                    "quote ' backslash \\ tab \t end", false, new byte[0], Double.MAX_VALUE),
            new Row(0, new BigDecimal("0.00"), OffsetDateTime.of(2000, 1, 1, 0, 0, 0, 0, ZoneOffset.ofHours(-8)), "",
                    true, new byte[] {0, 0, (byte) 0xff}, Double.MIN_VALUE),
            new Row(-1, null, null, null, null, null, null));

    static Row readRow(ResultSet rs) throws SQLException {
        long id = rs.getLong(1);
        BigDecimal amount = rs.getBigDecimal(2);
        OffsetDateTime ts = rs.getObject(3, OffsetDateTime.class);
        String label = rs.getString(4);
        Boolean flag = rs.getBoolean(5);
        if (rs.wasNull()) {
            flag = null;
        }
        byte[] data = rs.getBytes(6);
        Double ratio = rs.getDouble(7);
        if (rs.wasNull()) {
            ratio = null;
        }
        return new Row(id, amount, ts, label, flag, data, ratio);
    }

    static void binary(String[] a) throws SQLException {
        String table = a[0];
        int reads = Integer.parseInt(a[1]);
        String cols = "id, amount, ts, label, flag, data, ratio";
        int mismatches = 0;
        try (Connection conn = connect(null)) {
            try (PreparedStatement ins = conn.prepareStatement(
                    "INSERT INTO " + table + " (" + cols + ") VALUES (?, ?, ?, ?, ?, ?, ?)")) {
                for (Row r : ROWS) {
                    ins.setLong(1, r.id);
                    ins.setBigDecimal(2, r.amount);
                    if (r.ts == null) {
                        ins.setNull(3, Types.TIMESTAMP_WITH_TIMEZONE);
                    } else {
                        ins.setObject(3, r.ts);
                    }
                    ins.setString(4, r.label);
                    if (r.flag == null) {
                        ins.setNull(5, Types.BOOLEAN);
                    } else {
                        ins.setBoolean(5, r.flag);
                    }
                    ins.setBytes(6, r.data);
                    if (r.ratio == null) {
                        ins.setNull(7, Types.DOUBLE);
                    } else {
                        ins.setDouble(7, r.ratio);
                    }
                    check(ins.executeUpdate() == 1, "insert " + r.id);
                }
            }
            String formats = "";
            try (PreparedStatement sel = conn.prepareStatement("SELECT " + cols + " FROM " + table + " WHERE id = ?")) {
                for (int i = 0; i < reads; i++) {
                    for (Row want : ROWS) {
                        sel.setLong(1, want.id);
                        try (ResultSet rs = sel.executeQuery()) {
                            check(rs.next(), "no row for id " + want.id);
                            Row got = readRow(rs);
                            if (!got.same(want)) {
                                mismatches++;
                                out("mismatch", "read " + i + ": got " + got + " want " + want);
                            }
                            PGResultSetMetaData md = rs.getMetaData().unwrap(PGResultSetMetaData.class);
                            StringBuilder f = new StringBuilder();
                            for (int c = 1; c <= 7; c++) {
                                f.append(c > 1 ? "," : "").append(md.getFormat(c));
                            }
                            formats = f.toString();
                        }
                    }
                }
            }
            // The same rows once more in one result, in key order (several rows of binary DataRows).
            int n = 0;
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("SELECT " + cols + " FROM " + table + " ORDER BY id")) {
                List<Row> sorted = new ArrayList<>(ROWS);
                sorted.sort((x, y) -> Long.compare(x.id, y.id));
                while (rs.next()) {
                    Row got = readRow(rs);
                    if (n >= sorted.size() || !got.same(sorted.get(n))) {
                        mismatches++;
                        out("mismatch", "ordered row " + n + ": got " + got);
                    }
                    n++;
                }
            }
            out("rows", n);
            out("reads", reads * ROWS.size());
            out("formats", formats);
            out("mismatches", mismatches);
            check(mismatches == 0, "values did not round-trip");
        }
    }

    // ------------------------------------------------------------------------------------------
    // batch TABLE FIRST COUNT MODE: addBatch/executeBatch into a sharded table, read back by key
    // ------------------------------------------------------------------------------------------

    static void batch(String[] a) throws SQLException {
        String table = a[0];
        long first = Long.parseLong(a[1]);
        int count = Integer.parseInt(a[2]);
        boolean inTransaction = a[3].equals("transaction");
        try (Connection conn = connect(null)) {
            conn.setAutoCommit(!inTransaction);
            int[] counts;
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " (k, v) VALUES (?, ?)")) {
                for (int i = 0; i < count; i++) {
                    ins.setLong(1, first + i);
                    ins.setString(2, "v" + (first + i));
                    ins.addBatch();
                }
                counts = ins.executeBatch();
            }
            if (inTransaction) {
                conn.commit();
                conn.setAutoCommit(true);
            }
            Map<Integer, Integer> histogram = new TreeMap<>();
            for (int c : counts) {
                histogram.merge(c, 1, Integer::sum);
            }
            out("batch_results", counts.length);
            out("update_counts", histogram);  // e.g. {1=200}; reWriteBatchedInserts gives SUCCESS_NO_INFO (-2)
            int found = 0;
            int wrong = 0;
            try (PreparedStatement sel = conn.prepareStatement("SELECT v FROM " + table + " WHERE k = ?")) {
                for (int i = 0; i < count; i++) {
                    sel.setLong(1, first + i);
                    try (ResultSet rs = sel.executeQuery()) {
                        int n = 0;
                        while (rs.next()) {
                            n++;
                            if (!("v" + (first + i)).equals(rs.getString(1))) {
                                wrong++;
                            }
                        }
                        found += n == 1 ? 1 : 0;
                        wrong += n > 1 ? 1 : 0;
                    }
                }
            }
            out("found", found);
            out("wrong", wrong);
            try (PreparedStatement cnt = conn.prepareStatement(
                    "SELECT count(*), sum(k) FROM " + table + " WHERE k BETWEEN ? AND ?")) {
                cnt.setLong(1, first);
                cnt.setLong(2, first + count - 1);
                try (ResultSet rs = cnt.executeQuery()) {
                    rs.next();
                    out("count", rs.getLong(1));
                    out("sum", rs.getBigDecimal(2));
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // batch_atomic TABLE DUP_KEY NEW_KEY: with autocommit, one executeBatch is one implicit
    // transaction: a multi-shard UPDATE then a duplicate key leaves nothing behind; the same
    // batch without the duplicate keeps both
    // ------------------------------------------------------------------------------------------

    static void batchAtomic(String[] a) throws SQLException {
        String table = a[0];
        long dup = Long.parseLong(a[1]);
        long fresh = Long.parseLong(a[2]);
        try (Connection conn = connect(null); Statement st = conn.createStatement()) {
            st.addBatch("UPDATE " + table + " SET v = v || '!'");
            st.addBatch("INSERT INTO " + table + " (k, v) VALUES (" + dup + ", 'dup')");
            try {
                st.executeBatch();
                out("failing_batch", "no error");
            } catch (BatchUpdateException e) {
                out("failing_batch", e.getSQLState());
            }
            st.clearBatch();
            out("changed_after_failure", count(st, "SELECT count(*) FROM " + table + " WHERE v LIKE '%!'"));
            st.addBatch("UPDATE " + table + " SET v = v || '!'");
            st.addBatch("INSERT INTO " + table + " (k, v) VALUES (" + fresh + ", 'fresh')");
            int[] counts = st.executeBatch();
            out("counts", Arrays.toString(counts));
            out("changed_after_success", count(st, "SELECT count(*) FROM " + table + " WHERE v LIKE '%!'"));
            out("rows", count(st, "SELECT count(*) FROM " + table));
        }
    }

    static long count(Statement st, String sql) throws SQLException {
        try (ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    // ------------------------------------------------------------------------------------------
    // txn ROLLBACK_ID COMMIT_ID OTHER_ID: setAutoCommit(false), rollback, commit, read-only, errors
    // ------------------------------------------------------------------------------------------

    static void txn(String[] a) throws SQLException {
        long rollbackId = Long.parseLong(a[0]);
        long commitId = Long.parseLong(a[1]);
        long otherId = Long.parseLong(a[2]);
        String byKey = "SELECT name FROM users WHERE id = ?";
        try (Connection conn = connect(null); Connection observer = connect(null)) {
            conn.setAutoCommit(false);
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)")) {
                ins.setLong(1, rollbackId);
                ins.setString(2, "rolled back");
                ins.executeUpdate();
                out("rollback_inside", oneByKey(conn, byKey, rollbackId));
                out("rollback_other_session", oneByKey(observer, byKey, rollbackId));
                conn.rollback();
                out("after_rollback", oneByKey(conn, byKey, rollbackId));
                conn.commit();

                ins.setLong(1, commitId);
                ins.setString(2, "committed");
                ins.executeUpdate();
                out("commit_inside", oneByKey(conn, byKey, commitId));
                // A keyed read of a row on (usually) the other shard, in the same transaction.
                out("other_inside", oneByKey(conn, byKey, otherId));
                out("commit_other_session", oneByKey(observer, byKey, commitId));
                conn.commit();
                out("after_commit", oneByKey(observer, byKey, commitId));
            }

            // A read-only transaction (pgjdbc sends BEGIN READ ONLY): keyed reads work, writes fail.
            conn.setReadOnly(true);
            out("readonly_select", oneByKey(conn, byKey, otherId));
            out("readonly_insert", sqlstateOf(conn,
                    "INSERT INTO users (id, name) VALUES (" + (rollbackId + 1) + ", 'read-only')"));
            conn.rollback();
            conn.setReadOnly(false);

            // An error aborts the transaction until the rollback, then the connection goes on.
            out("in_txn_select", oneByKey(conn, byKey, commitId));
            out("duplicate_insert", sqlstateOf(conn,
                    "INSERT INTO users (id, name) VALUES (" + commitId + ", 'duplicate')"));
            out("after_error", sqlstateOf(conn, "SELECT name FROM users WHERE id = " + otherId));
            conn.rollback();
            out("after_error_rollback", oneByKey(conn, byKey, commitId));
            conn.commit();
        }
    }

    // ------------------------------------------------------------------------------------------
    // multishard: statements over both shards
    // ------------------------------------------------------------------------------------------

    static void multishard(String[] a) throws SQLException {
        long above = Long.parseLong(a[0]);
        try (Connection conn = connect(null)) {
            out("count", one(conn, "SELECT count(*) FROM users"));
            StringBuilder top = new StringBuilder();
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("SELECT id, name FROM users ORDER BY id DESC LIMIT 5")) {
                while (rs.next()) {
                    top.append(top.length() > 0 ? "," : "").append(rs.getLong(1));
                    check(("user" + rs.getLong(1)).equals(rs.getString(2)), "name of " + rs.getLong(1));
                }
            }
            out("top5", top);
            // Prepared and executed often enough to be a named server-side statement.
            try (PreparedStatement ps =
                    conn.prepareStatement("SELECT count(*), sum(id), min(name) FROM users WHERE id > ?")) {
                String last = null;
                for (int i = 0; i < 8; i++) {
                    ps.setLong(1, above);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        String now = rs.getLong(1) + "," + rs.getBigDecimal(2) + "," + rs.getString(3);
                        check(last == null || last.equals(now), "execution " + i + " changed: " + now);
                        last = now;
                    }
                }
                out("above", last);
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // unsupported: a multi-shard shape shardgate refuses with 0A000; the connection stays usable
    // ------------------------------------------------------------------------------------------

    static void unsupported(String[] a) throws SQLException {
        String refused = "SELECT id, row_number() OVER (ORDER BY id) FROM users";
        try (Connection conn = connect(null)) {
            out("autocommit_refused", sqlstateOf(conn, refused));
            out("autocommit_after", one(conn, "SELECT count(*) FROM users"));

            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT id, rank() OVER (ORDER BY name) FROM users WHERE id > ?")) {
                ps.setLong(1, 0);
                String state = "none";
                try {
                    ps.executeQuery().close();
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                out("prepared_refused", state);
            }
            out("prepared_after", one(conn, "SELECT count(*) FROM users"));

            conn.setAutoCommit(false);
            out("in_txn_refused", sqlstateOf(conn, refused));
            out("in_txn_next", sqlstateOf(conn, "SELECT 1"));
            conn.rollback();
            // The next transaction starts with a keyed read (a multi-shard statement as the first one of
            // a transaction is scenario multishard_txn), then reads both shards.
            out("in_txn_after_rollback", oneByKey(conn, "SELECT name FROM users WHERE id = ?", 1));
            out("in_txn_after_rollback_count", one(conn, "SELECT count(*) FROM users"));
            conn.commit();
            conn.setAutoCommit(true);
            out("autocommit_at_end", one(conn, "SELECT count(*) FROM users"));
        }
    }

    // ------------------------------------------------------------------------------------------
    // multishard_txn: statements over both shards inside setAutoCommit(false) transactions
    // ------------------------------------------------------------------------------------------

    static void multishardTxn(String[] a) throws SQLException {
        try (Connection conn = connect(null)) {
            conn.setAutoCommit(false);
            // The transaction's first statement: pgjdbc sends BEGIN and it in one batch (one Sync).
            out("first_count", one(conn, "SELECT count(*) FROM users"));
            out("then_max", one(conn, "SELECT max(id) FROM users"));
            conn.commit();
            try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM users WHERE id > ?")) {
                ps.setLong(1, 0);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out("prepared_first_count", rs.getLong(1));
                }
            }
            conn.rollback();
        }
    }

    // ------------------------------------------------------------------------------------------
    // metadata FLOAT_TABLE: start-up, DatabaseMetaData, a float8 that round-trips exactly
    // ------------------------------------------------------------------------------------------

    static void metadata(String[] a) throws SQLException {
        String floatTable = a[0];
        double sum = 0.1 + 0.2;
        try (Connection conn = connect(null)) {
            DatabaseMetaData md = conn.getMetaData();
            out("product", md.getDatabaseProductName());
            out("product_version", md.getDatabaseProductVersion());
            out("major", md.getDatabaseMajorVersion());
            out("driver_version", md.getDriverVersion());
            out("server_version", one(conn, "SHOW server_version"));
            out("application_name", one(conn, "SHOW application_name"));
            out("timezone", one(conn, "SHOW TimeZone"));
            out("jvm_timezone", ZoneId.systemDefault().getId());
            out("datestyle", one(conn, "SHOW DateStyle"));
            out("client_encoding", one(conn, "SHOW client_encoding"));
            try (ResultSet rs = md.getTables(null, "public", "users", new String[] {"TABLE"})) {
                out("tables", rs.next() ? rs.getString("TABLE_NAME") : "none");
            }
            StringBuilder columns = new StringBuilder();
            try (ResultSet rs = md.getColumns(null, "public", "users", null)) {
                while (rs.next()) {
                    columns.append(columns.length() > 0 ? "," : "").append(rs.getString("COLUMN_NAME"))
                            .append(":").append(rs.getString("TYPE_NAME"));
                }
            }
            out("columns", columns);
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "users")) {
                out("primary_key", rs.next() ? rs.getString("COLUMN_NAME") : "none");
            }

            // 0.1 + 0.2 stored as float8 and read back: as a double (text result) and as text.
            try (PreparedStatement ins =
                    conn.prepareStatement("INSERT INTO " + floatTable + " (id, x) VALUES (?, ?)")) {
                ins.setInt(1, 1);
                ins.setDouble(2, sum);
                ins.executeUpdate();
            }
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("SELECT x, x::text FROM " + floatTable + " WHERE id = 1")) {
                rs.next();
                check(rs.getDouble(1) == sum, "float8 read back as " + rs.getDouble(1));
                out("float_text", rs.getString(2));
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT ?::float8 = 0.1::float8 + 0.2::float8")) {
                ps.setDouble(1, sum);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out("float_param_equal", rs.getBoolean(1));
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // settings CLIENTS ROUNDS: the session settings each client made stay its own over the pool
    // ------------------------------------------------------------------------------------------

    static void settings(String[] a) throws SQLException {
        int clients = Integer.parseInt(a[0]);
        int rounds = Integer.parseInt(a[1]);
        List<Connection> conns = new ArrayList<>();
        try {
            // Client 0 talks the simple protocol; the others the extended one (pgjdbc's default).
            for (int c = 0; c < clients; c++) {
                Properties p = c == 0 ? props("preferQueryMode", "simple", "ApplicationName", "sg_jdbc_client0") : null;
                conns.add(connect(p));
            }
            try (Statement st = conns.get(0).createStatement()) {
                st.execute("SET extra_float_digits = 0");
            }
            try (Statement st = conns.get(1).createStatement()) {
                st.execute("SET statement_timeout = '4321s'");
            }
            Map<String, Integer> seen = new TreeMap<>();
            for (int r = 0; r < rounds; r++) {
                for (int c = 0; c < clients; c++) {
                    String row;
                    try (Statement st = conns.get(c).createStatement();
                            ResultSet rs = st.executeQuery("SELECT (0.1::float8 + 0.2::float8)::text,"
                                    + " current_setting('extra_float_digits'), current_setting('statement_timeout'),"
                                    + " current_setting('application_name'), current_setting('TimeZone')")) {
                        rs.next();
                        row = "client" + c + ":" + rs.getString(1) + "/" + rs.getString(2) + "/" + rs.getString(3)
                                + "/" + rs.getString(4) + "/" + rs.getString(5);
                    }
                    seen.merge(row, 1, Integer::sum);
                }
            }
            for (Map.Entry<String, Integer> e : seen.entrySet()) {
                out("seen", e.getKey() + "*" + e.getValue());
            }
        } finally {
            for (Connection c : conns) {
                c.close();
            }
        }
    }
}
