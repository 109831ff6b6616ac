import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;

/** Connects with the JDBC URL given (TLS settings in it) as app/app and runs SELECT 1. */
public class TlsCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", "app");
             ResultSet r = c.createStatement().executeQuery("SELECT 1")) {
            r.next();
            System.out.println("tls ok " + r.getInt(1));
        }
    }
}
