// C++ client for healthai over stubs generated from proto/ (protoc + grpc_cpp_plugin).
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "healthai/v1/forecast.grpc.pb.h"
#include "healthai/v1/ingest.grpc.pb.h"
#include "healthai/v1/risk.grpc.pb.h"

namespace healthai {

struct ConnectionOptions {
  std::string address;      // host:port
  std::string root_cert;    // PEM file; TLS when set (or when tls is true)
  std::string client_cert;  // PEM files for mutual TLS
  std::string client_key;
  std::string api_key;      // sent as "authorization: Bearer <key>"
  bool tls = false;
  std::chrono::milliseconds timeout{30000};
};

// A failed call: the gRPC status code and the server's message.
class RpcError : public std::runtime_error {
 public:
  RpcError(const std::string& method, const grpc::Status& status);
  grpc::StatusCode code() const { return code_; }

 private:
  grpc::StatusCode code_;
};

class Client {
 public:
  explicit Client(const ConnectionOptions& options);

  v1::IngestResponse IngestFhir(const std::string& json, const std::string& source) const;
  v1::ScoreResponse Score(const v1::ScoreRequest& request) const;
  v1::ForecastResponse Forecast(const v1::ForecastRequest& request) const;

 private:
  void Prepare(grpc::ClientContext* context) const;

  ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ingest::Stub> ingest_;
  std::unique_ptr<v1::Risk::Stub> risk_;
  std::unique_ptr<v1::Forecast::Stub> forecast_;
};

std::string ReadFile(const std::string& path);
const char* StatusName(grpc::StatusCode code);  // "INVALID_ARGUMENT", ...

}  // namespace healthai
