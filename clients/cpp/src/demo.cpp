// ingest -> score -> forecast against a running server; prints one JSON object and checks the
// answers' shape and invariants (exit 1 on a failed check, 3 on an RPC error, 2 on bad usage).
//
//   healthai_demo --address 127.0.0.1:50051 --fhir bundle.json
//     --risk-model risk_tiny --feature-names age,bmi --features 70,28,30,22
//     --forecast-model forecast_tiny --regions US-MA,US-NY --history 1,2,3,4,5,6,7,8
// (one command line).
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "healthai_client.h"

namespace {

struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Check(bool ok, const std::string& what) {
  if (!ok) throw CheckFailed("check failed: " + what);
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::vector<float> Numbers(const std::string& s) {
  std::vector<float> out;
  for (const auto& item : Split(s)) {
    size_t used = 0;
    float v = std::stof(item, &used);
    if (used != item.size()) throw std::invalid_argument("not a number: '" + item + "'");
    out.push_back(v);
  }
  return out;
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

template <typename Seq, typename Fn>
std::string Array(const Seq& seq, Fn fmt) {
  std::string out = "[";
  bool first = true;
  for (const auto& v : seq) {
    if (!first) out += ",";
    out += fmt(v);
    first = false;
  }
  return out + "]";
}

std::string Num(double v) {
  std::ostringstream s;
  s.precision(9);
  s << v;
  return s.str();
}

std::map<std::string, std::string> ParseArgs(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
      throw std::invalid_argument("bad argument " + key + ": expected --name value pairs");
    }
    args[key.substr(2)] = argv[i + 1];
  }
  if (!args.count("address")) throw std::invalid_argument("--address host:port is required");
  return args;
}

std::string Get(const std::map<std::string, std::string>& args, const std::string& key) {
  auto it = args.find(key);
  return it == args.end() ? std::string() : it->second;
}

// One JSON object of the steps done (nothing when none was).
void PrintParts(const std::vector<std::string>& parts) {
  if (parts.empty()) return;
  std::string out = "{";
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "," : "") + parts[i];
  std::cout << out << "}\n";
}

}  // namespace

int main(int argc, char** argv) {
  using healthai::v1::ForecastRequest;
  using healthai::v1::ScoreRequest;
  std::map<std::string, std::string> args;
  healthai::ConnectionOptions options;
  try {
    args = ParseArgs(argc, argv);
    options.address = Get(args, "address");
    options.root_cert = Get(args, "root-cert");
    options.client_cert = Get(args, "client-cert");
    options.client_key = Get(args, "client-key");
    options.api_key = Get(args, "api-key");
  } catch (const std::exception& e) {
    std::cerr << "healthai C++ demo: " << e.what() << "\n";
    return 2;
  }
  std::vector<std::string> parts;
  try {
    healthai::Client client(options);
    if (args.count("fhir")) {
      auto source = args.count("source") ? args["source"] : std::string("cpp-client");
      auto r = client.IngestFhir(healthai::ReadFile(args["fhir"]), source);
      Check(r.statuses_size() == static_cast<int>(r.accepted() + r.rejected()), "one status per record");
      Check(r.accepted() > 0, "some records accepted");
      std::string stored = "{";
      for (const auto& [kind, n] : r.receipt().stored()) {
        stored += (stored.size() > 1 ? "," : "") + Quote(kind) + ":" + std::to_string(n);
      }
      parts.push_back("\"ingest\":{\"accepted\":" + std::to_string(r.accepted()) + ",\"rejected\":" +
                      std::to_string(r.rejected()) + ",\"batch_id\":" + Quote(r.receipt().batch_id()) +
                      ",\"stored\":" + stored + "},\"duplicates\":" +
                      std::to_string(r.receipt().duplicates()) + "}");
    }
    if (args.count("risk-model")) {
      ScoreRequest request;
      request.set_model_name(args["risk-model"]);
      auto names = Split(Get(args, "feature-names"));
      auto features = Numbers(Get(args, "features"));
      for (const auto& n : names) request.add_feature_names(n);
      for (float v : features) request.add_features(v);
      auto r = client.Score(request);
      int patients = names.empty() ? r.probability_size() : static_cast<int>(features.size() / names.size());
      Check(r.probability_size() == patients, "one probability per patient");
      for (float p : r.probability()) Check(p >= 0.0f && p <= 1.0f, "probability in [0, 1]");
      Check(r.risk_band_size() == patients, "one risk band per patient");
      parts.push_back("\"score\":{\"model_name\":" + Quote(r.model_name()) + ",\"model_version\":" +
                      std::to_string(r.model_version()) + ",\"probability\":" +
                      Array(r.probability(), Num) + ",\"risk_band\":" + Array(r.risk_band(), Quote) + "}");
    }
    if (args.count("forecast-model") || args.count("graph")) {
      ForecastRequest request;
      request.set_graph(Get(args, "graph"));
      request.set_model_name(Get(args, "forecast-model"));
      if (args.count("history")) {
        for (const auto& r : Split(Get(args, "regions"))) request.mutable_history()->add_region_ids(r);
        for (float v : Numbers(args["history"])) request.mutable_history()->add_counts(v);
      } else {
        request.mutable_stored()->set_syndrome(args.count("stored") ? args["stored"] : "ili");
      }
      auto r = client.Forecast(request);
      int h = r.horizons_size(), n = r.region_ids_size(), q = r.quantile_levels_size();
      Check(r.point_size() == h * n, "point is [horizons x regions]");
      Check(r.quantiles_size() == h * n * q, "quantiles is [horizons x regions x levels]");
      for (int i = 0; i < h * n; ++i) {
        for (int j = 1; j < q; ++j) Check(r.quantiles(i * q + j) >= r.quantiles(i * q + j - 1), "quantiles ordered");
      }
      parts.push_back("\"forecast\":{\"model_name\":" + Quote(r.model_name()) + ",\"model_version\":" +
                      std::to_string(r.model_version()) + ",\"region_ids\":" + Array(r.region_ids(), Quote) +
                      ",\"horizons\":" + Array(r.horizons(), Num) + ",\"quantile_levels\":" +
                      Array(r.quantile_levels(), Num) + ",\"point\":" + Array(r.point(), Num) +
                      ",\"quantiles\":" + Array(r.quantiles(), Num) + "}");
    }
  } catch (const CheckFailed& e) {
    PrintParts(parts);  // the steps that succeeded before the failing one
    std::cerr << "healthai C++ demo: " << e.what() << "\n";
    return 1;
  } catch (const healthai::RpcError& e) {
    PrintParts(parts);
    std::cerr << "healthai C++ demo: " << e.what() << "\n";
    return 3;
  } catch (const std::exception& e) {
    PrintParts(parts);
    std::cerr << "healthai C++ demo: " << e.what() << "\n";
    return 2;
  }
  PrintParts(parts);
  return 0;
}
