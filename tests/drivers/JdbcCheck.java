// pgjdbc compatibility check for pgroute.
//
//   apt-get install -y libpostgresql-jdbc-java     # /usr/share/java/postgresql.jar
//   javac -d /tmp/jdbccheck -cp /usr/share/java/postgresql.jar tests/drivers/JdbcCheck.java
//   java -cp /tmp/jdbccheck:/usr/share/java/postgresql.jar JdbcCheck
//   PGPORT=15432 java -cp ... JdbcCheck               # straight to the primary
//
// Host/port from PGHOST/PGPORT (default 127.0.0.1:6432), user app, password app, database
// app. Prints PASS/FAIL per check, a closing "N passed, N failed" line, exits 1 on failure.

import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.LocalTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Random;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

public class JdbcCheck {
    static final String HOST = env("PGHOST", "127.0.0.1");
    static final String PORT = env("PGPORT", "6432");
    static final String USER = env("PGUSER", "app");
    static final String PASSWORD = env("PGPASSWORD", "app");
    static final String DATABASE = env("PGDATABASE", "app");
    static final int CHECK_TIMEOUT_S = Integer.parseInt(env("CHECK_TIMEOUT", "30"));
    static final String TABLE = "drv_jdbc_" + Integer.toString(new Random().nextInt(Integer.MAX_VALUE), 36);

    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    static Connection connect() throws SQLException {
        return connect(new Properties());
    }

    static Connection connect(Properties extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", USER);
        p.setProperty("password", PASSWORD);
        p.setProperty("connectTimeout", "10");
        p.setProperty("socketTimeout", String.valueOf(CHECK_TIMEOUT_S + 5));
        p.setProperty("ApplicationName", "JdbcCheck");
        p.putAll(extra);
        return DriverManager.getConnection("jdbc:postgresql://" + HOST + ":" + PORT + "/" + DATABASE, p);
    }

    static void info(String msg) {
        System.out.println("      " + msg);
    }

    static void eq(Object got, Object want, String what) {
        if (got == null ? want != null : !got.equals(want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static Object one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            if (!rs.next()) throw new AssertionError("no row from " + sql);
            return rs.getObject(1);
        }
    }

    interface Check {
        void run() throws Exception;
    }

    // ---------------------------------------------------------------------------- checks

    static void checkConnect() throws Exception {
        try (Connection c = connect()) {
            eq(one(c, "SELECT 1"), 1, "SELECT 1");
            info("answered by port " + one(c, "SELECT inet_server_port()"));
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE " + TABLE + " (id int PRIMARY KEY, name text NOT NULL, n int)");
            }
        }
        sleep(500);
    }

    static void checkPreparedStatement() throws Exception {
        try (Connection c = connect()) {
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 10; i++) { // switches to a named server statement at 5
                    ins.setInt(1, i);
                    ins.setString(2, "row" + i);
                    ins.setInt(3, i * 10);
                    eq(ins.executeUpdate(), 1, "insert " + i);
                }
            }
            sleep(500);
            TreeSet<Integer> ports = new TreeSet<>();
            try (PreparedStatement q = c.prepareStatement(
                    "SELECT name, n, inet_server_port() FROM " + TABLE + " WHERE id = ?")) {
                for (int i = 1; i <= 10; i++) {
                    q.setInt(1, i);
                    try (ResultSet rs = q.executeQuery()) {
                        if (!rs.next()) throw new AssertionError("no row for id " + i);
                        eq(rs.getString(1), "row" + i, "name " + i);
                        eq(rs.getInt(2), i * 10, "n " + i);
                        ports.add(rs.getInt(3));
                        if (rs.next()) throw new AssertionError("two rows for id " + i);
                    }
                }
            }
            info("prepared select answered by ports " + ports);
            // prepareThreshold=1: named statement from the first execution; also a server
            // prepared statement reused inside and after a transaction
            Properties p = new Properties();
            p.setProperty("prepareThreshold", "1");
            try (Connection c1 = connect(p);
                 PreparedStatement q = c1.prepareStatement("SELECT ?::int * 2")) {
                for (int i = 0; i < 10; i++) {
                    q.setInt(1, i);
                    try (ResultSet rs = q.executeQuery()) {
                        rs.next();
                        eq(rs.getInt(1), i * 2, "threshold=1 execution " + i);
                    }
                }
                c1.setAutoCommit(false);
                q.setInt(1, 21);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    eq(rs.getInt(1), 42, "in transaction");
                }
                c1.commit();
                c1.setAutoCommit(true);
                q.setInt(1, 5);
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    eq(rs.getInt(1), 10, "after transaction");
                }
            }
        }
    }

    static void checkBatch(boolean autocommit) throws Exception {
        int base = autocommit ? 100 : 200;
        try (Connection c = connect()) {
            c.setAutoCommit(autocommit);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, ?, ?)")) {
                for (int i = 0; i < 50; i++) {
                    ps.setInt(1, base + i);
                    ps.setString(2, "batch" + i);
                    ps.setInt(3, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                eq(counts.length, 50, "batch result count");
                for (int n : counts) {
                    if (n != 1 && n != Statement.SUCCESS_NO_INFO) throw new AssertionError("batch count " + n);
                }
            }
            // a Statement batch with several different statements
            try (Statement s = c.createStatement()) {
                s.addBatch("INSERT INTO " + TABLE + " VALUES (" + (base + 60) + ", 'sb', 1)");
                s.addBatch("UPDATE " + TABLE + " SET n = n + 1 WHERE id = " + (base + 60));
                s.addBatch("DELETE FROM " + TABLE + " WHERE id = " + (base + 49));
                int[] counts = s.executeBatch();
                eq(counts.length, 3, "statement batch count");
            }
            if (!autocommit) c.commit();
            c.setAutoCommit(false);
            eq(((Number) one(c, "SELECT count(*) FROM " + TABLE + " WHERE id >= " + base
                    + " AND id < " + (base + 100))).intValue(), 50, "rows after batch");
            eq(one(c, "SELECT n FROM " + TABLE + " WHERE id = " + (base + 60)), 2, "row updated in batch");
            c.commit();
            // a batch that fails in the middle
            c.setAutoCommit(autocommit);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, ?, ?)")) {
                int[] ids = {base + 70, 1, base + 71};
                for (int id : ids) {
                    ps.setInt(1, id);
                    ps.setString(2, "x");
                    ps.setInt(3, 0);
                    ps.addBatch();
                }
                try {
                    ps.executeBatch();
                    throw new AssertionError("batch with a duplicate key did not fail");
                } catch (BatchUpdateException e) {
                    eq(e.getNextException() == null ? e.getSQLState() : e.getNextException().getSQLState(),
                            "23505", "batch failure SQLSTATE");
                }
            }
            if (!autocommit) c.rollback();
            c.setAutoCommit(true);
            eq(one(c, "SELECT 1"), 1, "select after failed batch");
            c.setAutoCommit(false);
            eq(((Number) one(c, "SELECT count(*) FROM " + TABLE + " WHERE id IN (" + (base + 70) + ", "
                    + (base + 71) + ")")).intValue(), 0, "rows of the failed batch");
            c.commit();
        }
    }

    static void checkTransactions() throws Exception {
        try (Connection c = connect()) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, ?, ?)")) {
                ps.setInt(1, 300);
                ps.setString(2, "committed");
                ps.setInt(3, 1);
                ps.executeUpdate();
                info("transaction ran on port " + one(c, "SELECT inet_server_port()"));
                c.commit();
                ps.setInt(1, 301);
                ps.setString(2, "rolled back");
                ps.executeUpdate();
                c.rollback();
                ps.setInt(1, 302);
                ps.setString(2, "outer");
                ps.executeUpdate();
                var sp = c.setSavepoint("sp");
                ps.setInt(1, 303);
                ps.setString(2, "inner");
                ps.executeUpdate();
                c.rollback(sp);
                c.commit();
            }
            List<Integer> ids = new ArrayList<>();
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT id FROM " + TABLE + " WHERE id BETWEEN 300 AND 309 ORDER BY id")) {
                while (rs.next()) ids.add(rs.getInt(1));
            }
            c.commit();
            eq(ids, List.of(300, 302), "rows after commit/rollback/savepoint");
            // read-only transaction
            c.setReadOnly(true);
            eq(one(c, "SELECT count(*) FROM " + TABLE + " WHERE id = 300"), 1L, "read-only transaction read");
            c.commit();
            c.setReadOnly(false);
        }
    }

    static void checkResultSet() throws Exception {
        try (Connection c = connect()) {
            // many rows, several types, fetched in chunks with a cursor (fetchSize in a transaction)
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.setFetchSize(100);
                try (ResultSet rs = s.executeQuery("SELECT g, g::text, g * 1.5, now(), g % 2 = 0, "
                        + "'\\x0102'::bytea FROM generate_series(1, 1000) g")) {
                    long sum = 0;
                    int rows = 0;
                    while (rs.next()) {
                        sum += rs.getLong(1);
                        rows++;
                        if (!rs.getString(2).equals(String.valueOf(rs.getLong(1)))) throw new AssertionError("text col");
                        rs.getBigDecimal(3);
                        rs.getTimestamp(4);
                        rs.getBoolean(5);
                        eq(rs.getBytes(6).length, 2, "bytea");
                    }
                    eq(rows, 1000, "rows");
                    eq(sum, 500500L, "sum");
                }
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT NULL::int AS a, 'x' AS b")) {
                rs.next();
                rs.getInt("a");
                eq(rs.wasNull(), true, "wasNull");
                eq(rs.getString("b"), "x", "by label");
                eq(rs.getMetaData().getColumnCount(), 2, "metadata");
            }
            // DatabaseMetaData (catalog queries the driver builds)
            try (ResultSet rs = c.getMetaData().getColumns(null, "public", TABLE, null)) {
                int n = 0;
                while (rs.next()) n++;
                eq(n, 3, "DatabaseMetaData.getColumns");
            }
        }
    }

    static void checkErrorRecovery() throws Exception {
        try (Connection c = connect()) {
            String[][] cases = {
                {"SELECT 1/0", "22012"},
                {"SELECT * FROM no_such_table_xyz", "42P01"},
                {"SELEC 1", "42601"},
                {"INSERT INTO " + TABLE + " VALUES (1, 'dup', 1)", "23505"},
            };
            for (String[] cs : cases) {
                try (Statement s = c.createStatement()) {
                    s.execute(cs[0]);
                    throw new AssertionError(cs[0] + " did not fail");
                } catch (SQLException e) {
                    eq(e.getSQLState(), cs[1], cs[0]);
                }
                eq(one(c, "SELECT 3"), 3, "after " + cs[1]);
            }
            // server-prepared statement failing, then working
            try (PreparedStatement ps = c.prepareStatement("SELECT 10 / ?")) {
                for (int i = 1; i <= 7; i++) {
                    ps.setInt(1, i);
                    ps.executeQuery().close();
                }
                ps.setInt(1, 0);
                try {
                    ps.executeQuery();
                    throw new AssertionError("10/0 did not fail");
                } catch (SQLException e) {
                    eq(e.getSQLState(), "22012", "prepared 10/0");
                }
                ps.setInt(1, 5);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    eq(rs.getInt(1), 2, "prepared after its error");
                }
            }
            // error inside a transaction
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("SELECT 1/0");
                throw new AssertionError("1/0 did not fail");
            } catch (SQLException e) {
                eq(e.getSQLState(), "22012", "1/0 in transaction");
            }
            try (Statement s = c.createStatement()) {
                s.execute("SELECT 1");
                throw new AssertionError("statement in aborted transaction did not fail");
            } catch (SQLException e) {
                eq(e.getSQLState(), "25P02", "aborted transaction");
            }
            c.rollback();
            eq(one(c, "SELECT 4"), 4, "after rollback");
            c.commit();
        }
    }

    static void checkCleanup() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + TABLE);
        }
    }

    public static void main(String[] args) throws Exception {
        System.out.println("pgjdbc " + org.postgresql.Driver.class.getPackage().getImplementationVersion()
                + " -> " + HOST + ":" + PORT + ", table " + TABLE);
        Object[][] checks = {
            {"connect (+ create table)", (Check) JdbcCheck::checkConnect},
            {"PreparedStatement x10 (server-prepared after 5)", (Check) JdbcCheck::checkPreparedStatement},
            {"batch insert, autocommit", (Check) () -> checkBatch(true)},
            {"batch insert, in a transaction", (Check) () -> checkBatch(false)},
            {"setAutoCommit(false) + commit + rollback + savepoint", (Check) JdbcCheck::checkTransactions},
            {"ResultSet reading", (Check) JdbcCheck::checkResultSet},
            {"error then recovery", (Check) JdbcCheck::checkErrorRecovery},
            {"drop table", (Check) JdbcCheck::checkCleanup},
        };
        ExecutorService ex = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true);
            return t;
        });
        int passed = 0, failed = 0;
        for (Object[] ch : checks) {
            String name = (String) ch[0];
            Check fn = (Check) ch[1];
            String start = LocalTime.now(ZoneOffset.UTC).toString();
            Future<?> f = ex.submit(() -> {
                fn.run();
                return null;
            });
            String err = null;
            try {
                f.get(CHECK_TIMEOUT_S, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                f.cancel(true);
                err = "TIMEOUT after " + CHECK_TIMEOUT_S + "s";
            } catch (java.util.concurrent.ExecutionException e) {
                Throwable t = e.getCause();
                err = t.getClass().getName() + ": " + t.getMessage();
                if (t instanceof SQLException) err += " [SQLSTATE " + ((SQLException) t).getSQLState() + "]";
                if (System.getenv("VERBOSE") != null) t.printStackTrace(System.out);
            }
            if (err == null) {
                passed++;
                System.out.println("PASS  " + name + "  [" + start + "Z]");
            } else {
                failed++;
                System.out.println("FAIL  " + name + "  [" + start + "Z]\n      " + err);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.out.flush();
        Runtime.getRuntime().halt(failed > 0 ? 1 : 0);
    }
}
