import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends an NDJSON file of version-1 events to the events topic with the Kafka
 * client's idempotent producer: each event keyed by its commune_code (so a
 * commune's events stay in order on one partition), acknowledged by all
 * in-sync replicas, retried by the client without duplicates.
 *
 * <pre>
 * java -cp kafka-clients-4.1.2.jar:slf4j-api-1.7.36.jar SendEvents.java \
 *     BOOTSTRAP_SERVERS TOPIC events.ndjson [client.properties]
 * </pre>
 *
 * The optional properties file adds the cluster's security settings
 * (security.protocol, sasl.mechanism, sasl.jaas.config, ssl.truststore.*).
 */
public class SendEvents {
    private static final Pattern COMMUNE = Pattern.compile("\"commune_code\"\\s*:\\s*\"([^\"]*)\"");

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        if (args.length > 3) {
            try (var reader = Files.newBufferedReader(Path.of(args[3]))) {
                props.load(reader);
            }
        }
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        String topic = args[1];

        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (var producer = new KafkaProducer<String, String>(props)) {
            for (String line : Files.readAllLines(Path.of(args[2]))) {
                if (line.isBlank()) {
                    continue;
                }
                // The key is the event's commune_code (a record without one
                // is kept by the pipeline as a dead letter, like any bad event).
                Matcher commune = COMMUNE.matcher(line);
                String key = commune.find() ? commune.group(1) : null;
                sent.add(producer.send(new ProducerRecord<>(topic, key, line)));
            }
            producer.flush();
            for (Future<RecordMetadata> delivery : sent) {
                delivery.get(); // throws if an event was not written
            }
        }
        System.out.println(sent.size() + " events written to " + topic);
    }
}
