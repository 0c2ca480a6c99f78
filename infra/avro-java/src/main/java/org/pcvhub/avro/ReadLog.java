package org.pcvhub.avro;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;

import org.apache.avro.Conversions;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.SchemaStore;

/**
 * Reads pcvhub records the way any Avro user would: Apache Avro for Java and the .avsc files.
 *
 * <p>Usage: {@code java -jar avro-java-reader.jar CURRENT_DIR [RELEASED_DIR...] < records}.
 * Every .avsc file under the directories is parsed on its own (each is self-contained).
 * The first directory holds the current schemas, used as reader schemas; all of them are
 * known writer schemas, found by their CRC-64-AVRO fingerprint.
 *
 * <p>Standard input: one record per line, its bytes in hex (Avro single-object encoding of
 * pcvhub.Envelope). Standard output: one JSON object per input line, in the same order:
 * {@code {"ok": true, "envelope": {...}, "payload_schema": NAME, "payload": {...}}} or
 * {@code {"ok": false, "error": EXCEPTION_CLASS, "message": TEXT}}. Values are plain JSON:
 * bytes and fixed as lower hex, timestamps as microseconds since the epoch, dates as ISO
 * strings, decimals as plain strings, UUIDs as strings, enums as their symbol.
 */
public final class ReadLog {
  private static final String ENVELOPE = "pcvhub.Envelope";

  private ReadLog() {}

  public static void main(String[] args) throws IOException {
    if (args.length == 0) {
      System.err.println("usage: ReadLog CURRENT_SCHEMA_DIR [RELEASED_SCHEMA_DIR...] < hex lines");
      System.exit(2);
    }
    Map<String, Schema> current = new HashMap<>();
    Map<Long, Schema> writersByFingerprint = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      for (Schema schema : parseEach(Path.of(args[i]))) {
        writersByFingerprint.put(SchemaNormalization.parsingFingerprint64(schema), schema);
        if (i == 0) {
          current.put(schema.getFullName(), schema);
        }
      }
    }
    Schema envelope = current.get(ENVELOPE);
    if (envelope == null) {
      throw new IllegalArgumentException("no " + ENVELOPE + " schema under " + args[0]);
    }
    GenericData model = modelWithLogicalTypes();
    // The single-object header names the writer schema by fingerprint: the store knows
    // every version of the envelope (and, harmlessly, every other schema).
    SchemaStore.Cache store = new SchemaStore.Cache();
    writersByFingerprint.values().forEach(store::addSchema);
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(model, envelope, store);

    Reader reader = new Reader(decoder, model, current, writersByFingerprint);
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    try (BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      String line;
      while ((line = in.readLine()) != null) {
        if (!line.isBlank()) {
          out.println(reader.read(hexToBytes(line.strip())));
        }
      }
    }
    out.flush();
  }

  /** Decimal, UUID, date and timestamp-micros values as Java types, the Avro way. */
  private static GenericData modelWithLogicalTypes() {
    GenericData model = new GenericData();
    model.addLogicalTypeConversion(new Conversions.DecimalConversion());
    model.addLogicalTypeConversion(new Conversions.UUIDConversion());
    model.addLogicalTypeConversion(new TimeConversions.DateConversion());
    model.addLogicalTypeConversion(new TimeConversions.TimestampMicrosConversion());
    return model;
  }

  private static List<Schema> parseEach(Path dir) throws IOException {
    List<Path> files;
    try (Stream<Path> walk = Files.walk(dir)) {
      files = walk.filter(p -> p.toString().endsWith(".avsc")).sorted().toList();
    }
    List<Schema> schemas = new ArrayList<>();
    for (Path file : files) {
      // A fresh parser per file: no file may lean on a name another file defined.
      schemas.add(new Schema.Parser().parse(new File(file.toString())));
    }
    return schemas;
  }

  /** Decodes one record into its JSON line, or says why it could not. */
  private static final class Reader {
    private final BinaryMessageDecoder<GenericRecord> decoder;
    private final GenericData model;
    private final Map<String, Schema> current;
    private final Map<Long, Schema> writersByFingerprint;

    Reader(BinaryMessageDecoder<GenericRecord> decoder, GenericData model,
        Map<String, Schema> current, Map<Long, Schema> writersByFingerprint) {
      this.decoder = decoder;
      this.model = model;
      this.current = current;
      this.writersByFingerprint = writersByFingerprint;
    }

    String read(byte[] wire) {
      try {
        GenericRecord envelope = decoder.decode(wire);
        // schema_fingerprint is the 8 bytes of single-object encoding: little-endian.
        byte[] fingerprint = ((GenericFixed) envelope.get("schema_fingerprint")).bytes();
        long value = ByteBuffer.wrap(fingerprint).order(ByteOrder.LITTLE_ENDIAN).getLong();
        Schema writer = writersByFingerprint.get(value);
        if (writer == null) {
          return failure("UnknownPayloadSchema", "no schema has fingerprint "
              + toHex(fingerprint) + " (little-endian)");
        }
        Schema readerSchema = current.getOrDefault(writer.getFullName(), writer);
        GenericDatumReader<GenericRecord> payloadReader =
            new GenericDatumReader<>(writer, readerSchema, model);
        byte[] body = toBytes((ByteBuffer) envelope.get("payload"));
        BinaryDecoder in = DecoderFactory.get().binaryDecoder(body, null);
        GenericRecord payload = payloadReader.read(null, in);
        if (!in.isEnd()) {
          return failure("TrailingBytes", "bytes left after the payload of "
              + writer.getFullName());
        }
        StringBuilder json = new StringBuilder("{\"ok\": true, \"envelope\": ");
        Json.write(json, envelope);
        json.append(", \"payload_schema\": ");
        Json.string(json, writer.getFullName());
        json.append(", \"payload\": ");
        Json.write(json, payload);
        return json.append('}').toString();
      } catch (Exception e) { // every failure is reported per record, never fatal
        return failure(e.getClass().getSimpleName(), String.valueOf(e.getMessage()));
      }
    }

    private static String failure(String error, String message) {
      StringBuilder json = new StringBuilder("{\"ok\": false, \"error\": ");
      Json.string(json, error);
      json.append(", \"message\": ");
      Json.string(json, message);
      return json.append('}').toString();
    }
  }

  /** Plain JSON from the values GenericDatumReader returns (with the conversions above). */
  private static final class Json {
    static void write(StringBuilder out, Object value) {
      if (value == null) {
        out.append("null");
      } else if (value instanceof GenericRecord record) {
        out.append('{');
        String sep = "";
        for (Schema.Field field : record.getSchema().getFields()) {
          out.append(sep);
          string(out, field.name());
          out.append(": ");
          write(out, record.get(field.pos()));
          sep = ", ";
        }
        out.append('}');
      } else if (value instanceof Map<?, ?> map) {
        out.append('{');
        String sep = "";
        for (Map.Entry<?, ?> entry : map.entrySet()) {
          out.append(sep);
          string(out, entry.getKey().toString());
          out.append(": ");
          write(out, entry.getValue());
          sep = ", ";
        }
        out.append('}');
      } else if (value instanceof Collection<?> items) {
        out.append('[');
        String sep = "";
        for (Object item : items) {
          out.append(sep);
          write(out, item);
          sep = ", ";
        }
        out.append(']');
      } else if (value instanceof ByteBuffer bytes) {
        string(out, toHex(toBytes(bytes)));
      } else if (value instanceof GenericFixed fixed) {
        string(out, toHex(fixed.bytes()));
      } else if (value instanceof Instant instant) {
        out.append(Math.addExact(Math.multiplyExact(instant.getEpochSecond(), 1_000_000L),
            instant.getNano() / 1_000));
      } else if (value instanceof LocalDate date) {
        string(out, date.toString());
      } else if (value instanceof BigDecimal decimal) {
        string(out, decimal.toPlainString());
      } else if (value instanceof UUID uuid) {
        string(out, uuid.toString());
      } else if (value instanceof GenericEnumSymbol<?> symbol) {
        string(out, symbol.toString());
      } else if (value instanceof CharSequence text) {
        string(out, text.toString());
      } else if (value instanceof Boolean || value instanceof Integer || value instanceof Long) {
        out.append(value);
      } else if (value instanceof Float number) {
        out.append(finite(number.doubleValue(), value));
      } else if (value instanceof Double number) {
        out.append(finite(number, value));
      } else {
        throw new IllegalArgumentException("no JSON form for " + value.getClass());
      }
    }

    private static String finite(double number, Object value) {
      if (Double.isNaN(number) || Double.isInfinite(number)) {
        throw new IllegalArgumentException("JSON has no " + value);
      }
      return value.toString();
    }

    /** A JSON string, every non-ASCII character escaped so the output's charset never matters. */
    static void string(StringBuilder out, String text) {
      out.append('"');
      for (int i = 0; i < text.length(); i++) {
        char c = text.charAt(i);
        if (c == '"' || c == '\\') {
          out.append('\\').append(c);
        } else if (c < 0x20 || c > 0x7e) {
          out.append(String.format("\\u%04x", (int) c));
        } else {
          out.append(c);
        }
      }
      out.append('"');
    }
  }

  private static byte[] toBytes(ByteBuffer buffer) {
    ByteBuffer copy = buffer.duplicate();
    byte[] bytes = new byte[copy.remaining()];
    copy.get(bytes);
    return bytes;
  }

  private static String toHex(byte[] bytes) {
    StringBuilder hex = new StringBuilder(bytes.length * 2);
    for (byte b : bytes) {
      hex.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
    }
    return hex.toString();
  }

  private static byte[] hexToBytes(String hex) {
    if (hex.length() % 2 != 0) {
      throw new IllegalArgumentException("odd number of hex digits");
    }
    byte[] bytes = new byte[hex.length() / 2];
    for (int i = 0; i < bytes.length; i++) {
      bytes[i] = (byte) Integer.parseInt(hex, 2 * i, 2 * i + 2, 16);
    }
    return bytes;
  }
}
